// SPDX-License-Identifier: MIT
// The PKRU value saved in an x86-64 signal frame.
//
// On signal delivery the kernel saves the interrupted code's PKRU in the
// frame's XSAVE area and runs the handler with the default PKRU; sigreturn
// loads the saved value back. Reading it gives a handler the interrupted
// code's rights; editing it changes the rights that code resumes with.
// All async-signal-safe.
#pragma once

#include <cstdint>

namespace pkeys::arch {

// Records where PKRU lives in an XSAVE area; call once before signals use
// the functions below (not from a handler).
void init_signal_frame_layout() noexcept;

// The interrupted code's PKRU, from a handler's ucontext. False when the
// frame has no PKRU (no PKU, or not an XSAVE frame).
bool frame_pkru(const void* ucontext, std::uint32_t* pkru) noexcept;

// Replaces the interrupted code's PKRU in the frame.
bool set_frame_pkru(void* ucontext, std::uint32_t pkru) noexcept;

// The access a page fault was raised for, from the error code the kernel
// saved: 0 read, 1 write, 2 instruction fetch, -1 unknown.
int frame_access_kind(const void* ucontext) noexcept;

}  // namespace pkeys::arch
