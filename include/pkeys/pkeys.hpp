// SPDX-License-Identifier: MIT
// pkeys.hpp - memory protection keys for C++: owning keys, checked rights,
// scoped rights changes and tagged memory regions.
//
// A pkeys::key owns one protection key (freed by its destructor); a
// pkeys::region is memory mapped and tagged with a key; a
// pkeys::scoped_rights changes the calling thread's rights on a key for one
// scope and restores the previous rights on exit. Errors are
// std::error_code values carrying errno (compare with std::errc). On x86 PKU
// hardware key::set is inline: one RDPKRU and one WRPKRU, with no system
// call, lock or atomic read-modify-write, and a cross-thread change
// (pkey_set_all) that lands in between is not lost (pkeys/pkru.h).
//
// Example:
//
//   auto key = pkeys::key::allocate(pkeys::rights::no_access());
//   if (!key) return key.error();
//   auto secret = pkeys::region::map(4096, PROT_READ | PROT_WRITE, *key);
//   if (!secret) return secret.error();
//   {
//     pkeys::scoped_rights open(*key, pkeys::rights::read_write());
//     std::memcpy(secret->data(), "hunter2", 8);
//   }  // access disabled again: touching secret->data() faults
//
// A key destroyed while regions still carry it is freed as pkey_free
// frees it: the regions' pages stay access-disabled in every thread and the
// number is not handed out again until they are unmapped. release_strict()
// refuses instead (EBUSY).
#ifndef PKEYS_PKEYS_HPP
#define PKEYS_PKEYS_HPP

// Fail here, with the reason, rather than at the first std::expected.
// (GCC 12 gives C++23 a __cplusplus of 202100L: test the library feature.)
#if !defined(__cplusplus)
#error "pkeys.hpp is C++ (C++23); C programs include <pkeys/pkeys.h>"
#elif __cplusplus <= 202002L
#error "pkeys.hpp needs C++23 (std::expected): compile with -std=c++23"
#else
#include <version>
#if !defined(__cpp_lib_expected) || __cpp_lib_expected < 202202L
#error "pkeys.hpp needs C++23's std::expected, which this standard library lacks"
#else
#define PKEYS_HPP_CXX23_ 1  // the rest only then: one error, not a cascade
#endif
#endif
#ifdef PKEYS_HPP_CXX23_

#include <sys/mman.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <expected>
#include <optional>
#include <span>
#include <system_error>
#include <utility>

#include "pkeys/pkeys.h"
#include "pkeys/pkru.h"

namespace pkeys {

// Rights of a thread on a key. Holds only valid combinations.
class rights {
 public:
  // Read and write allowed.
  constexpr rights() noexcept = default;
  static constexpr rights read_write() noexcept { return rights(0); }
  static constexpr rights read_only() noexcept { return rights(PKEY_DISABLE_WRITE); }
  static constexpr rights no_access() noexcept { return rights(PKEY_DISABLE_ACCESS); }
  // From PKEY_DISABLE_* bits; nullopt for any other bit.
  static constexpr std::optional<rights> from_bits(unsigned bits) noexcept {
    if (bits & ~static_cast<unsigned>(PKEYS_RIGHTS_MASK)) return std::nullopt;
    return rights(bits);
  }

  constexpr unsigned bits() const noexcept { return bits_; }
  constexpr bool can_read() const noexcept { return !(bits_ & PKEY_DISABLE_ACCESS); }
  constexpr bool can_write() const noexcept { return bits_ == 0; }
  friend constexpr bool operator==(rights, rights) noexcept = default;

 private:
  explicit constexpr rights(unsigned bits) noexcept : bits_(bits) {}
  unsigned bits_ = 0;
};

namespace detail {
inline std::error_code errno_code() noexcept { return {errno, std::generic_category()}; }
}  // namespace detail

// An allocated protection key, freed when destroyed. Movable, not copyable.
class key {
 public:
  // Allocates a key; the calling thread gets `initial`, other threads none.
  static std::expected<key, std::error_code> allocate(rights initial = rights()) noexcept {
    const int id = pkey_alloc(0, initial.bits());
    if (id < 0) return std::unexpected(detail::errno_code());
    return key(id, (pkeys_capabilities() & PKEYS_CAP_HARDWARE) != 0);
  }

  key(key&& other) noexcept
      : id_(std::exchange(other.id_, -1)),
        keep_(std::exchange(other.keep_, ~0u)),
        access_bit_(std::exchange(other.access_bit_, 0u)) {}
  key& operator=(key&& other) noexcept {
    if (this != &other) {
      (void)release();
      id_ = std::exchange(other.id_, -1);
      keep_ = std::exchange(other.keep_, ~0u);
      access_bit_ = std::exchange(other.access_bit_, 0u);
    }
    return *this;
  }
  key(const key&) = delete;
  key& operator=(const key&) = delete;
  // Frees the key, as release() does; never throws.
  ~key() { (void)release(); }

  // The key number, or -1 once released or moved from.
  int id() const noexcept { return id_; }
  explicit operator bool() const noexcept { return id_ > 0; }

  // Sets the calling thread's rights (process-wide on the emulation).
  // EINVAL once released or moved from.
  std::error_code set(rights r) const noexcept {
    // One compare: a key held on the hardware switches inline (restartable,
    // pkeys/pkru.h); released, moved from or emulated, pkey_set decides
    // (EINVAL for id -1).
    if (access_bit_ != 0) [[likely]] {
      pkeys_pkru_update(keep_, r.bits() * access_bit_);
      return {};
    }
    return set_checked(r);
  }

  // The calling thread's rights.
  rights get() const noexcept {
    if (access_bit_ != 0) return *rights::from_bits(pkeys_pkru_rights(pkeys_rdpkru(), id_));
    const int bits = pkey_get(id_);
    return bits < 0 ? rights::no_access() : *rights::from_bits(static_cast<unsigned>(bits));
  }

  // pkey_mprotect with this key.
  std::error_code protect(void* addr, std::size_t len, int prot) const noexcept {
    if (pkey_mprotect(addr, len, prot, id_) != 0) return detail::errno_code();
    return {};
  }

  // Frees the key now, as pkey_free: while mapped pages carry it the
  // number is quarantined (or, under PKEYS_FREE_STRICT, EBUSY and the key
  // stays owned).
  std::error_code release() noexcept { return release_with(pkey_free); }
  // Frees the key only if no mapped page carries it:
  // std::errc::device_or_resource_busy (EBUSY) otherwise, and the key stays
  // owned.
  std::error_code release_strict() noexcept { return release_with(pkeys_free_strict); }

 private:
  friend class scoped_rights;
  std::error_code release_with(int (*free_key)(int) noexcept) noexcept {
    if (id_ <= 0) return {};
    if (free_key(id_) != 0) return detail::errno_code();
    id_ = -1;
    keep_ = ~0u;
    access_bit_ = 0;
    return {};
  }
  [[gnu::noinline]] std::error_code set_checked(rights r) const noexcept {
    if (pkey_set(id_, r.bits()) != 0) return detail::errno_code();
    return {};
  }
  key(int id, bool hardware) noexcept : id_(id) {
    if (hardware && id > 0 && id < 16) {  // PKRU holds keys 0..15
      keep_ = ~(3u << PKEYS_PKRU_SHIFT(id));
      access_bit_ = 1u << PKEYS_PKRU_SHIFT(id);
    }
  }
  int id_ = -1;
  // The inline switch's masks within PKRU: all but this key's bits, and
  // its access-disable bit (rights r are r * access_bit_). ~0 and 0 when
  // pkey_set must decide: emulated, released or moved from.
  std::uint32_t keep_ = ~0u;
  std::uint32_t access_bit_ = 0;
};

// Sets the calling thread's rights on a key for one scope and restores the
// rights it had before on exit. Scopes nest.
class scoped_rights {
 public:
  scoped_rights(const key& k, rights r) noexcept : key_(k), keep_(k.keep_) {
    if (k.access_bit_ != 0) [[likely]] {  // on the hardware: one inline switch
      saved_bits_ = pkeys_pkru_exchange(keep_, r.bits() * k.access_bit_) & ~keep_;
      return;
    }
    keep_ = 0;
    id_ = k.id();
    const checked c = enter_checked(k, r);
    saved_bits_ = c.previous;
    error_ = c.error;
  }
  ~scoped_rights() {
    // Only onto the key held at entry: a released or replaced key's keep_
    // (id, off the inline path) differs, and a freed number's rights are
    // never written back. keep_ is 0 off the inline path, which no key's is.
    if (key_.keep_ == keep_) [[likely]] {
      pkeys_pkru_update(keep_, saved_bits_);
      return;
    }
    if (keep_ == 0 && !error_ && key_.id() == id_) leave_checked(key_, saved_bits_);
  }
  scoped_rights(const scoped_rights&) = delete;
  scoped_rights& operator=(const scoped_rights&) = delete;

  // Why the rights could not be set (then nothing is restored).
  std::error_code error() const noexcept { return error_; }

 private:
  // Off the inline path: out of line, taking and returning values, so that
  // `this` never escapes and the inline path keeps its fields in registers.
  struct checked {
    std::uint32_t previous;
    std::error_code error;
  };
  [[gnu::noinline]] static checked enter_checked(const key& k, rights r) noexcept {
    const std::uint32_t previous = k.get().bits();
    return {previous, k.set(r)};
  }
  [[gnu::noinline]] static void leave_checked(const key& k, std::uint32_t previous) noexcept {
    (void)k.set(*rights::from_bits(previous));
  }

  const key& key_;
  std::uint32_t keep_;        // inline: the key's keep_ at entry; else 0
  std::uint32_t saved_bits_;  // inline: the key's PKRU bits; else its rights
  int id_ = -1;               // off the inline path: the key at entry
  std::error_code error_;
};

// Anonymous memory mapped and tagged with a key, unmapped when destroyed.
class region {
 public:
  // Maps `len` bytes (rounded up to pages) with `prot`, tagged with `k`.
  static std::expected<region, std::error_code> map(std::size_t len, int prot,
                                                    const key& k) noexcept {
    void* p = ::mmap(nullptr, len, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return std::unexpected(detail::errno_code());
    if (std::error_code ec = k.protect(p, len, prot)) {
      ::munmap(p, len);
      return std::unexpected(ec);
    }
    return region(p, len);
  }

  region(region&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  region& operator=(region&& other) noexcept {
    if (this != &other) {
      reset();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  region(const region&) = delete;
  region& operator=(const region&) = delete;
  ~region() { reset(); }

  void* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::span<std::byte> bytes() const noexcept {
    return {static_cast<std::byte*>(data_), size_};
  }

 private:
  region(void* data, std::size_t size) noexcept : data_(data), size_(size) {}
  void reset() noexcept {
    if (data_) ::munmap(data_, size_);
    data_ = nullptr;
    size_ = 0;
  }
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

// A virtual key: one of any number of protection domains (see
// pkeys_vkey_create in pkeys.h), destroyed with the object.
//
//   auto heap = pkeys::vkey::create(pkeys::rights::no_access());
//   heap->protect(arena, arena_len, PROT_READ | PROT_WRITE);
//   {
//     pkeys::vkey_scope open(*heap, pkeys::rights::read_write());
//     parse(arena);
//   }
class vkey {
 public:
  static std::expected<vkey, std::error_code> create(rights process_wide = rights::no_access()) noexcept {
    const int id = pkeys_vkey_create(process_wide.bits());
    if (id < 0) return std::unexpected(detail::errno_code());
    return vkey(id);
  }
  vkey(vkey&& other) noexcept : id_(std::exchange(other.id_, -1)) {}
  vkey& operator=(vkey&& other) noexcept {
    if (this != &other) {
      (void)destroy();
      id_ = std::exchange(other.id_, -1);
    }
    return *this;
  }
  vkey(const vkey&) = delete;
  vkey& operator=(const vkey&) = delete;
  // Destroys it; one still open or still tagging pages stays (see destroy()).
  ~vkey() { (void)destroy(); }

  int id() const noexcept { return id_; }

  std::error_code protect(void* addr, std::size_t len, int prot) const noexcept {
    if (pkeys_vkey_mprotect(addr, len, prot, id_) != 0) return detail::errno_code();
    return {};
  }
  // Process-wide rights, those outside any vkey_scope.
  std::error_code set(rights r) const noexcept {
    if (pkeys_vkey_set(id_, r.bits()) != 0) return detail::errno_code();
    return {};
  }
  rights get() const noexcept {
    const int bits = pkeys_vkey_get(id_);
    return bits < 0 ? rights::no_access() : *rights::from_bits(static_cast<unsigned>(bits));
  }
  // EBUSY while open in a thread or while pages carry it.
  std::error_code destroy() noexcept {
    if (id_ <= 0) return {};
    if (pkeys_vkey_destroy(id_) != 0) return detail::errno_code();
    id_ = -1;
    return {};
  }

 private:
  explicit vkey(int id) noexcept : id_(id) {}
  int id_ = -1;
};

// Opens a vkey in the calling thread for one scope (pkeys_vkey_begin/end).
class vkey_scope {
 public:
  vkey_scope(const vkey& v, rights r) noexcept : id_(v.id()) {
    if (pkeys_vkey_begin(id_, r.bits()) != 0) error_ = detail::errno_code();
  }
  ~vkey_scope() {
    if (!error_) (void)pkeys_vkey_end(id_);
  }
  vkey_scope(const vkey_scope&) = delete;
  vkey_scope& operator=(const vkey_scope&) = delete;
  // Why it could not be opened (EBUSY: every cached key is open elsewhere).
  std::error_code error() const noexcept { return error_; }

 private:
  int id_;
  std::error_code error_;
};

}  // namespace pkeys

#endif  // PKEYS_HPP_CXX23_
#endif  // PKEYS_PKEYS_HPP
