// SPDX-License-Identifier: MIT
#include "arch/x86_64/signal_frame.hpp"

#include <signal.h>
#include <ucontext.h>

#include <atomic>
#include <cstring>

#include "arch/x86_64/cpu_features.hpp"

namespace pkeys::arch {
namespace {

// The frame's FP area: 512 legacy bytes whose software-reserved part (at
// 464) announces an XSAVE area; the XSAVE header follows at 512.
constexpr std::size_t kSwReservedOffset = 464;
constexpr std::size_t kXstateHeaderOffset = 512;
constexpr std::uint32_t kFpXstateMagic1 = 0x46505853;
constexpr std::uint64_t kPkruFeature = 1ull << 9;

struct FpxSwBytes {
  std::uint32_t magic1;
  std::uint32_t extended_size;
  std::uint64_t xfeatures;
  std::uint32_t xstate_size;
  std::uint32_t padding[7];
};

std::atomic<unsigned> g_pkru_offset{0};  // in a standard-format XSAVE area

// The PKRU slot of the frame, or null.
unsigned char* pkru_area(const void* ucontext, std::uint64_t* xstate_bv) noexcept {
  const auto* uc = static_cast<const ucontext_t*>(ucontext);
  auto* fp = reinterpret_cast<unsigned char*>(uc->uc_mcontext.fpregs);
  const unsigned offset = g_pkru_offset.load(std::memory_order_relaxed);
  if (!fp || offset == 0) return nullptr;
  FpxSwBytes sw;
  std::memcpy(&sw, fp + kSwReservedOffset, sizeof sw);
  if (sw.magic1 != kFpXstateMagic1 || !(sw.xfeatures & kPkruFeature)) return nullptr;
  if (offset + sizeof(std::uint32_t) > sw.xstate_size) return nullptr;
  std::memcpy(xstate_bv, fp + kXstateHeaderOffset, sizeof *xstate_bv);
  return fp;
}

}  // namespace

void init_signal_frame_layout() noexcept {
  g_pkru_offset.store(read_cpu_features().pkru_xsave_offset, std::memory_order_relaxed);
}

bool frame_pkru(const void* ucontext, std::uint32_t* pkru) noexcept {
  std::uint64_t xstate_bv;
  unsigned char* fp = pkru_area(ucontext, &xstate_bv);
  if (!fp) return false;
  // A clear XSTATE_BV bit means PKRU was in its init state, 0.
  *pkru = 0;
  if (xstate_bv & kPkruFeature)
    std::memcpy(pkru, fp + g_pkru_offset.load(std::memory_order_relaxed), sizeof *pkru);
  return true;
}

bool set_frame_pkru(void* ucontext, std::uint32_t pkru) noexcept {
  std::uint64_t xstate_bv;
  unsigned char* fp = pkru_area(ucontext, &xstate_bv);
  if (!fp) return false;
  std::memcpy(fp + g_pkru_offset.load(std::memory_order_relaxed), &pkru, sizeof pkru);
  xstate_bv |= kPkruFeature;  // else sigreturn would load the init value
  std::memcpy(fp + kXstateHeaderOffset, &xstate_bv, sizeof xstate_bv);
  return true;
}

int frame_access_kind(const void* ucontext) noexcept {
  if (!ucontext) return -1;
  const auto* uc = static_cast<const ucontext_t*>(ucontext);
  constexpr long kPageFault = 14;
  if (uc->uc_mcontext.gregs[REG_TRAPNO] != kPageFault) return -1;
  const long err = uc->uc_mcontext.gregs[REG_ERR];
  if (err & (1 << 4)) return 2;  // I/D: instruction fetch
  return (err & (1 << 1)) ? 1 : 0;  // W/R
}

}  // namespace pkeys::arch
