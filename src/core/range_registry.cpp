// SPDX-License-Identifier: MIT
#include "core/range_registry.hpp"

#include <algorithm>

namespace pkeys::core {

void RangeRegistry::insert(std::uintptr_t start, Entry e) {
  ranges_.emplace(start, e);
  by_key_[e.key].insert(start);
}

void RangeRegistry::remove(std::map<std::uintptr_t, Entry>::iterator it) {
  auto k = by_key_.find(it->second.key);
  k->second.erase(it->first);
  if (k->second.empty()) by_key_.erase(k);
  ranges_.erase(it);
}

void RangeRegistry::erase(std::uintptr_t start, std::uintptr_t end) {
  if (start >= end || ranges_.empty()) return;
  auto it = ranges_.upper_bound(start);
  if (it != ranges_.begin()) --it;
  while (it != ranges_.end() && it->first < end) {
    auto cur = it++;
    const std::uintptr_t s = cur->first;
    const Entry e = cur->second;
    if (e.end <= start) continue;
    remove(cur);
    if (s < start) insert(s, Entry{start, e.key, e.prot});
    if (e.end > end) insert(end, Entry{e.end, e.key, e.prot});
  }
}

void RangeRegistry::merge_around(std::uintptr_t start) {
  auto it = ranges_.find(start);
  if (it == ranges_.end()) return;
  // Merge with the following range.
  auto next = std::next(it);
  if (next != ranges_.end() && next->first == it->second.end &&
      next->second.key == it->second.key && next->second.prot == it->second.prot) {
    const std::uintptr_t new_end = next->second.end;
    remove(next);
    it->second.end = new_end;
  }
  // Merge into the preceding range.
  if (it != ranges_.begin()) {
    auto prev = std::prev(it);
    if (prev->second.end == it->first && prev->second.key == it->second.key &&
        prev->second.prot == it->second.prot) {
      const std::uintptr_t new_end = it->second.end;
      remove(it);
      prev->second.end = new_end;
    }
  }
}

void RangeRegistry::assign(std::uintptr_t start, std::uintptr_t end, int key, int prot) {
  erase(start, end);
  if (start >= end || key <= 0) return;
  insert(start, Entry{end, key, prot});
  merge_around(start);
}

void RangeRegistry::reprotect(std::uintptr_t start, std::uintptr_t end, int prot) {
  for (const TaggedRange& p : pieces(start, end))
    if (p.key > 0) assign(p.start, p.end, p.key, prot);
}

void RangeRegistry::move(std::uintptr_t from, std::size_t old_len, std::uintptr_t to,
                         std::size_t new_len) {
  const std::uintptr_t old_end = from + old_len;
  std::vector<TaggedRange> moved;
  for (const TaggedRange& p : pieces(from, old_end))
    if (p.key > 0) moved.push_back(p);
  erase(from, old_end);
  for (TaggedRange p : moved) {
    // A mapping that grows keeps the key of its last page, as the kernel
    // extends the last VMA.
    if (p.end == old_end && new_len > old_len) p.end = from + new_len;
    const std::uintptr_t s = to + (p.start - from);
    const std::uintptr_t e = std::min(to + (p.end - from), to + new_len);
    if (s < e) assign(s, e, p.key, p.prot);
  }
}

void RangeRegistry::erase_key(int key) {
  auto k = by_key_.find(key);
  if (k == by_key_.end()) return;
  for (std::uintptr_t start : k->second) ranges_.erase(start);
  by_key_.erase(k);
}

void RangeRegistry::keep_only(
    const std::vector<std::pair<std::uintptr_t, std::uintptr_t>>& mapped) {
  std::vector<TaggedRange> kept;
  for (const auto& [start, e] : ranges_) {
    auto m = std::lower_bound(mapped.begin(), mapped.end(), start,
                              [](const auto& iv, std::uintptr_t a) { return iv.second <= a; });
    for (; m != mapped.end() && m->first < e.end; ++m) {
      const std::uintptr_t s = std::max(start, m->first);
      const std::uintptr_t t = std::min(e.end, m->second);
      if (s < t) kept.push_back(TaggedRange{s, t, e.key, e.prot});
    }
  }
  ranges_.clear();
  by_key_.clear();
  for (const TaggedRange& r : kept) assign(r.start, r.end, r.key, r.prot);
}

std::vector<TaggedRange> RangeRegistry::pieces(std::uintptr_t start,
                                               std::uintptr_t end) const {
  std::vector<TaggedRange> out;
  std::uintptr_t cursor = start;
  auto it = ranges_.upper_bound(start);
  if (it != ranges_.begin()) --it;
  for (; it != ranges_.end() && it->first < end; ++it) {
    const std::uintptr_t s = std::max(it->first, start);
    const std::uintptr_t e = std::min(it->second.end, end);
    if (s >= e) continue;
    if (cursor < s) out.push_back(TaggedRange{cursor, s, 0, 0});
    out.push_back(TaggedRange{s, e, it->second.key, it->second.prot});
    cursor = e;
  }
  if (cursor < end) out.push_back(TaggedRange{cursor, end, 0, 0});
  return out;
}

std::optional<TaggedRange> RangeRegistry::find(std::uintptr_t addr) const {
  auto it = ranges_.upper_bound(addr);
  if (it == ranges_.begin()) return std::nullopt;
  --it;
  if (addr >= it->second.end) return std::nullopt;
  return TaggedRange{it->first, it->second.end, it->second.key, it->second.prot};
}

std::size_t RangeRegistry::key_count(int key) const {
  auto k = by_key_.find(key);
  return k == by_key_.end() ? 0 : k->second.size();
}

}  // namespace pkeys::core
