// SPDX-License-Identifier: MIT
// RangeRegistry: which address ranges carry which key, with the page
// protection the program asked for.
//
// Pure bookkeeping: it knows nothing of how a backend enforces rights. The
// emulated backend derives page protections from it; every backend uses it
// for fault attribution and, where the kernel cannot tell, for safe free.
// Not thread-safe: the Runtime's lock guards it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>
#include <vector>

namespace pkeys::core {

struct TaggedRange {
  std::uintptr_t start;
  std::uintptr_t end;  // exclusive, page-aligned
  int key;             // 0 for an untagged gap in pieces()
  int prot;            // what the program asked for (PROT_*)
};

class RangeRegistry {
 public:
  // Records [start, end) as carrying `key` (>= 1) with `prot`, replacing
  // whatever overlapped; neighbours with the same key and prot merge.
  void assign(std::uintptr_t start, std::uintptr_t end, int key, int prot);
  // Forgets [start, end), splitting ranges that straddle its edges.
  void erase(std::uintptr_t start, std::uintptr_t end);
  // Keeps each tagged piece of [start, end) with its key, protection `prot`.
  void reprotect(std::uintptr_t start, std::uintptr_t end, int prot);
  // mremap moved [from, from + old_len) to `to` with `new_len`.
  void move(std::uintptr_t from, std::size_t old_len, std::uintptr_t to,
            std::size_t new_len);
  // Forgets every range of `key`.
  void erase_key(int key);
  // Keeps only the parts that lie inside `mapped` (sorted, disjoint).
  void keep_only(const std::vector<std::pair<std::uintptr_t, std::uintptr_t>>& mapped);

  // [start, end) cut at range edges: tagged pieces and untagged gaps (key 0).
  std::vector<TaggedRange> pieces(std::uintptr_t start, std::uintptr_t end) const;
  std::optional<TaggedRange> find(std::uintptr_t addr) const;
  bool has_key(int key) const { return key_count(key) != 0; }
  std::size_t key_count(int key) const;
  std::size_t size() const { return ranges_.size(); }
  bool empty() const { return ranges_.empty(); }

  // Calls f(const TaggedRange&) for each range of `key`, in address order.
  template <class F>
  void for_each_of_key(int key, F&& f) const {
    auto it = by_key_.find(key);
    if (it == by_key_.end()) return;
    for (std::uintptr_t start : it->second) {
      const Entry& e = ranges_.at(start);
      f(TaggedRange{start, e.end, e.key, e.prot});
    }
  }
  // Calls f(const TaggedRange&) for every range, in address order.
  template <class F>
  void for_each(F&& f) const {
    for (const auto& [start, e] : ranges_) f(TaggedRange{start, e.end, e.key, e.prot});
  }

 private:
  struct Entry {
    std::uintptr_t end;
    int key;
    int prot;
  };
  void insert(std::uintptr_t start, Entry e);
  void remove(std::map<std::uintptr_t, Entry>::iterator it);
  void merge_around(std::uintptr_t start);

  std::map<std::uintptr_t, Entry> ranges_;  // by start, disjoint
  std::unordered_map<int, std::set<std::uintptr_t>> by_key_;
};

}  // namespace pkeys::core
