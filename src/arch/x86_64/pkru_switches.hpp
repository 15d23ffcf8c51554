// SPDX-License-Identifier: MIT
// The recorded PKRU switches (pkeys_pkru_update in pkeys/pkru.h) of every
// registered module, and the restart of a thread interrupted inside one.
//
// A cross-thread change edits the PKRU in the target's signal frame. If the
// target was between the RDPKRU and the WRPKRU of a switch, the WRPKRU
// would write the value read before the edit: moving the thread back to
// the switch's first instruction makes it read the edited value. The
// switch writes nothing but its scratch registers before the WRPKRU, so it
// can run again from the start. All async-signal-safe.
#pragma once

#include <cstdint>

namespace pkeys::arch {

// If `ucontext`'s instruction pointer lies in a recorded switch at or
// before its WRPKRU, moves it to the switch's start and returns true.
bool restart_interrupted_switch(void* ucontext) noexcept;

// The calling thread's copy of its PKRU as pkeys' switches last wrote it
// (pkeys_thread_pkru); its address, for the thread registry.
std::uint32_t* thread_pkru_copy() noexcept;

}  // namespace pkeys::arch
