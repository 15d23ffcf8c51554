// SPDX-License-Identifier: MIT
#include "core/key_table.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "pkeys/pkeys.h"

namespace pkeys::core {

constinit KeyTable g_key_table;

namespace {

std::atomic<int> g_free_mode{-1};  // -1: PKEYS_FREE not read yet

// Unset or empty: quarantine, glibc's behaviour. A value that is neither
// (a typo) keeps the stricter behaviour the user presumably asked for.
FreeMode free_mode_from_environment(const char** unrecognised) noexcept {
  const char* s = std::getenv("PKEYS_FREE");
  *unrecognised = nullptr;
  if (!s || !*s || std::strcmp(s, "quarantine") == 0) return FreeMode::quarantine;
  if (std::strcmp(s, "strict") == 0) return FreeMode::strict;
  *unrecognised = s;
  return FreeMode::strict;
}

}  // namespace

FreeMode free_mode() noexcept {
  int m = g_free_mode.load(std::memory_order_acquire);
  if (m < 0) {
    const char* unrecognised = nullptr;
    const FreeMode from_env = free_mode_from_environment(&unrecognised);
    int expected = -1;
    // Only the thread that stores the value reports it: once per process.
    if (g_free_mode.compare_exchange_strong(expected, static_cast<int>(from_env)) && unrecognised) {
      char line[128];
      const int n = std::snprintf(line, sizeof line,
                                  "pkeys: PKEYS_FREE='%.40s' is not strict or quarantine: strict\n", unrecognised);
      if (n > 0) (void)!::write(STDERR_FILENO, line, std::min(static_cast<std::size_t>(n), sizeof line - 1));
    }
    m = g_free_mode.load(std::memory_order_acquire);
  }
  return static_cast<FreeMode>(m);
}

void set_free_mode(FreeMode mode) noexcept { g_free_mode.store(static_cast<int>(mode), std::memory_order_release); }

static_assert(KeyTable::kAllocAllThreads == PKEYS_ALLOC_ALL_THREADS);
static_assert(valid_rights(PKEYS_RIGHTS_MASK) && !valid_rights(PKEYS_RIGHTS_MASK + 1));

int KeyTable::acquire(backend::Backend& backend, KeyDonor& donor, unsigned rights) {
  int key = backend.acquire_key(rights);
  // The vkey cache never keeps a key the program asks for.
  while (key == -ENOSPC && donor.give_back_key_locked()) key = backend.acquire_key(rights);
  return key;
}

int KeyTable::acquire_locked(backend::Backend& backend, KeyDonor& donor, unsigned rights) {
  const int key = acquire(backend, donor, rights);
  if (key >= kKeyLimit) {  // cannot be tracked: refuse rather than lose it
    backend.release_key(key);
    return -ENOSPC;
  }
  return key;
}

void KeyTable::publish_locked(int key) noexcept {
  labels_[key][0] = 0;
  // Stamped before it is published: a save that sees the key allocated
  // sees its stamp too.
  const std::uint32_t now = allocations_.load(std::memory_order_relaxed) + 1;
  stamps_[key].store(now, std::memory_order_release);
  allocations_.store(now, std::memory_order_release);
  allocated_.fetch_or(std::uint64_t{1} << key, std::memory_order_acq_rel);
  if (register_rights_ && key > 0 && key < backend::kRegisterKeys)
    register_fields_not_held_.fetch_and(~(std::uint32_t{3} << (2 * key)), std::memory_order_acq_rel);
}

void KeyTable::unpublish_locked(int key) noexcept {
  // Allocated first: a pkey_set that finds the register bits set falls back
  // to the checked path, which must then find the key gone too (its switch
  // has no test of its own).
  allocated_.fetch_and(~(std::uint64_t{1} << key), std::memory_order_acq_rel);
  if (key < backend::kRegisterKeys) register_fields_not_held_.fetch_or(std::uint32_t{3} << (2 * key), std::memory_order_acq_rel);
  labels_[key][0] = 0;
}

void KeyTable::quarantine_locked(int key) noexcept {
  quarantined_.fetch_or(std::uint64_t{1} << key, std::memory_order_acq_rel);
}

void KeyTable::end_quarantine_locked(int key) noexcept {
  quarantined_.fetch_and(~(std::uint64_t{1} << key), std::memory_order_acq_rel);
}

int KeyTable::execute_only_key_locked(backend::Backend& backend, KeyDonor& donor) {
  if (execute_only_key_ < 0) {
    // A key of pkeys' own: every thread holds a free number access-disabled
    // (it was reset when last freed), and so it stays.
    const int key = acquire(backend, donor, PKEY_DISABLE_ACCESS);
    if (key < 0) return key;
    backend.set_start_rights(key, PKEY_DISABLE_ACCESS);
    execute_only_key_ = key;
  }
  return execute_only_key_;
}

int KeyTable::forget_execute_only_key_locked(backend::Backend& backend) noexcept {
  const int key = execute_only_key_;
  if (key >= 0) backend.set_start_rights(key, -1);
  execute_only_key_ = -1;
  return key;
}

int KeyTable::set_label_locked(int key, const char* label) noexcept {
  if (key <= 0 || !is_allocated(key)) return -EINVAL;
  std::size_t n = 0;
  for (; label && label[n] && n + 1 < kLabelSize; ++n) labels_[key][n] = label[n];
  labels_[key][n] = 0;
  return 0;
}

int KeyTable::get_label_locked(int key, char* buf, std::size_t len) const noexcept {
  if (key <= 0 || !is_allocated(key)) return -EINVAL;
  const std::size_t n = std::strlen(labels_[key]);
  if (buf && len > 0) {
    const std::size_t copy = n < len ? n : len - 1;
    std::memcpy(buf, labels_[key], copy);
    buf[copy] = 0;
  }
  return static_cast<int>(n);
}

}  // namespace pkeys::core
