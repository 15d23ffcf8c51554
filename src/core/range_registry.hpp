// SPDX-License-Identifier: MIT
// RangeRegistry: which address ranges carry which key, with the page
// protection the program asked for.
//
// Pure bookkeeping: it knows nothing of how rights are enforced. The
// address space (address_space.hpp) owns it, guards it with its lock and
// derives page protections, fault attribution and safe free from it.
//
// Its containers live in pkeys' own memory (os/internal_memory.hpp), not
// the program's heap: the program may tag its heap, and a fault report
// reads the records from a signal handler.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>
#include <vector>

#include "core/tag.hpp"
#include "os/internal_memory.hpp"

namespace pkeys::core {

struct TaggedRange {
  std::uintptr_t start;
  std::uintptr_t end;  // exclusive, page-aligned
  Tag tag;             // untagged for a gap in pieces()
  int prot;            // what the program asked for (PROT_*)
};

class RangeRegistry {
 public:
  // Records [start, end) as carrying `tag` with `prot`, replacing whatever
  // overlapped; neighbours with the same tag and prot merge. An untagged
  // `tag` only forgets.
  void assign(std::uintptr_t start, std::uintptr_t end, Tag tag, int prot);
  // Forgets [start, end), splitting ranges that straddle its edges.
  void erase(std::uintptr_t start, std::uintptr_t end);
  // Keeps each tagged piece of [start, end) with its key, protection `prot`.
  void reprotect(std::uintptr_t start, std::uintptr_t end, int prot);
  // mremap moved [from, from + old_len) to `to` with `new_len`.
  void move(std::uintptr_t from, std::size_t old_len, std::uintptr_t to,
            std::size_t new_len);
  // Forgets every range of `tag`.
  void erase_tag(Tag tag);
  // Keeps only the parts that lie inside `mapped` (sorted, disjoint).
  void keep_only(const std::vector<std::pair<std::uintptr_t, std::uintptr_t>>& mapped);

  // Cuts ranges at `addr`, so that an erase there later only removes
  // entries (allocates now, never then). Same records, more entries.
  void split_at(std::uintptr_t addr);
  // Merges the ranges meeting at `addr` again where they can (no allocation).
  void merge_at(std::uintptr_t addr) noexcept;
  // Forgets every range that overlaps [start, end), whole: the fallback when
  // memory ran out, allocating nothing.
  void drop_overlapping(std::uintptr_t start, std::uintptr_t end) noexcept;

  // [start, end) cut at range edges: tagged pieces and untagged gaps.
  std::vector<TaggedRange> pieces(std::uintptr_t start, std::uintptr_t end) const;
  std::optional<TaggedRange> find(std::uintptr_t addr) const;
  bool has(Tag tag) const { return count(tag) != 0; }
  std::size_t count(Tag tag) const;
  std::size_t size() const { return ranges_.size(); }
  bool empty() const { return ranges_.empty(); }

  // Calls f(const TaggedRange&) for each range of `tag`, in address order.
  template <class F>
  void for_each_of(Tag tag, F&& f) const {
    auto it = by_tag_.find(tag);
    if (it == by_tag_.end()) return;
    for (std::uintptr_t start : it->second) {
      const Entry& e = ranges_.at(start);
      f(TaggedRange{start, e.end, e.tag, e.prot});
    }
  }
  // Calls f(const TaggedRange&) for every range, in address order.
  template <class F>
  void for_each(F&& f) const {
    for (const auto& [start, e] : ranges_) f(TaggedRange{start, e.end, e.tag, e.prot});
  }

 private:
  struct Entry {
    std::uintptr_t end;
    Tag tag;
    int prot;
  };
  void insert(std::uintptr_t start, Entry e);
  template <class T>
  using Internal = os::InternalAllocator<T>;
  using Ranges = std::map<std::uintptr_t, Entry, std::less<>, Internal<std::pair<const std::uintptr_t, Entry>>>;
  using Starts = std::set<std::uintptr_t, std::less<>, Internal<std::uintptr_t>>;
  using ByTag = std::unordered_map<Tag, Starts, std::hash<Tag>, std::equal_to<>, Internal<std::pair<const Tag, Starts>>>;
  void remove(Ranges::iterator it) noexcept;
  void merge_around(std::uintptr_t start) noexcept;

  Ranges ranges_;  // by start, disjoint
  ByTag by_tag_;
};

}  // namespace pkeys::core
