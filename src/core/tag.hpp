// SPDX-License-Identifier: MIT
// Tag: what a recorded range carries, a protection key or a virtual key.
//
// The only place that knows how the two share one number; everything else
// asks is_key()/is_vkey() and key()/vkey().
#pragma once

#include <cstddef>
#include <functional>

namespace pkeys::core {

class Tag {
 public:
  constexpr Tag() = default;  // untagged: key 0
  static constexpr Tag key(int k) noexcept { return Tag(k); }
  static constexpr Tag vkey(int v) noexcept { return Tag(kVKeyBase + v); }

  constexpr bool untagged() const noexcept { return value_ <= 0; }
  constexpr bool is_key() const noexcept { return value_ > 0 && value_ < kVKeyBase; }
  constexpr bool is_vkey() const noexcept { return value_ >= kVKeyBase; }
  constexpr int key() const noexcept { return is_key() ? value_ : 0; }     // 0 unless a key
  constexpr int vkey() const noexcept { return is_vkey() ? value_ - kVKeyBase : 0; }  // 0 unless a vkey

  constexpr bool operator==(const Tag&) const = default;
  std::size_t hash() const noexcept { return std::hash<int>{}(value_); }

 private:
  static constexpr int kVKeyBase = 1 << 24;  // above any key number
  constexpr explicit Tag(int value) noexcept : value_(value) {}
  int value_ = 0;
};

}  // namespace pkeys::core

template <>
struct std::hash<pkeys::core::Tag> {
  std::size_t operator()(const pkeys::core::Tag& t) const noexcept { return t.hash(); }
};
