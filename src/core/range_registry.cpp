// SPDX-License-Identifier: MIT
#include "core/range_registry.hpp"

#include <algorithm>

namespace pkeys::core {

void RangeRegistry::insert(std::uintptr_t start, Entry e) {
  ranges_.emplace(start, e);
  try {
    by_tag_[e.tag].insert(start);
  } catch (...) {
    ranges_.erase(start);  // both indexes or neither
    throw;
  }
}

void RangeRegistry::remove(Ranges::iterator it) noexcept {
  auto k = by_tag_.find(it->second.tag);
  k->second.erase(it->first);
  if (k->second.empty()) by_tag_.erase(k);
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
    // Straddling edges keep their outer parts: shrink in place or add the
    // tail first, so that running out of memory loses no record.
    if (e.end > end) insert(end, Entry{e.end, e.tag, e.prot});
    if (s < start) {
      cur->second.end = start;
    } else {
      remove(cur);
    }
  }
}

void RangeRegistry::split_at(std::uintptr_t addr) {
  auto it = ranges_.upper_bound(addr);
  if (it == ranges_.begin()) return;
  --it;
  if (it->first == addr || it->second.end <= addr) return;
  const Entry e = it->second;
  insert(addr, Entry{e.end, e.tag, e.prot});
  it->second.end = addr;
}

void RangeRegistry::merge_at(std::uintptr_t addr) noexcept { merge_around(addr); }

void RangeRegistry::drop_overlapping(std::uintptr_t start, std::uintptr_t end) noexcept {
  if (start >= end || ranges_.empty()) return;
  auto it = ranges_.upper_bound(start);
  if (it != ranges_.begin()) --it;
  while (it != ranges_.end() && it->first < end) {
    auto cur = it++;
    if (cur->second.end > start) remove(cur);
  }
}

void RangeRegistry::merge_around(std::uintptr_t start) noexcept {
  auto it = ranges_.find(start);
  if (it == ranges_.end()) return;
  // Merge with the following range.
  auto next = std::next(it);
  if (next != ranges_.end() && next->first == it->second.end &&
      next->second.tag == it->second.tag && next->second.prot == it->second.prot) {
    const std::uintptr_t new_end = next->second.end;
    remove(next);
    it->second.end = new_end;
  }
  // Merge into the preceding range.
  if (it != ranges_.begin()) {
    auto prev = std::prev(it);
    if (prev->second.end == it->first && prev->second.tag == it->second.tag &&
        prev->second.prot == it->second.prot) {
      const std::uintptr_t new_end = it->second.end;
      remove(it);
      prev->second.end = new_end;
    }
  }
}

void RangeRegistry::assign(std::uintptr_t start, std::uintptr_t end, Tag tag, int prot) {
  erase(start, end);
  if (start >= end || tag.untagged()) return;
  insert(start, Entry{end, tag, prot});
  merge_around(start);
}

void RangeRegistry::reprotect(std::uintptr_t start, std::uintptr_t end, int prot) {
  for (const TaggedRange& p : pieces(start, end))
    if (!p.tag.untagged()) assign(p.start, p.end, p.tag, prot);
}

void RangeRegistry::move(std::uintptr_t from, std::size_t old_len, std::uintptr_t to,
                         std::size_t new_len) {
  const std::uintptr_t old_end = from + old_len;
  std::vector<TaggedRange> moved;
  for (const TaggedRange& p : pieces(from, old_end))
    if (!p.tag.untagged()) moved.push_back(p);
  erase(from, old_end);
  for (TaggedRange p : moved) {
    // A mapping that grows keeps the key of its last page, as the kernel
    // extends the last VMA.
    if (p.end == old_end && new_len > old_len) p.end = from + new_len;
    const std::uintptr_t s = to + (p.start - from);
    const std::uintptr_t e = std::min(to + (p.end - from), to + new_len);
    if (s < e) assign(s, e, p.tag, p.prot);
  }
}

void RangeRegistry::erase_tag(Tag tag) {
  auto k = by_tag_.find(tag);
  if (k == by_tag_.end()) return;
  for (std::uintptr_t start : k->second) ranges_.erase(start);
  by_tag_.erase(k);
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
      if (s < t) kept.push_back(TaggedRange{s, t, e.tag, e.prot});
    }
  }
  ranges_.clear();
  by_tag_.clear();
  for (const TaggedRange& r : kept) assign(r.start, r.end, r.tag, r.prot);
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
    if (cursor < s) out.push_back(TaggedRange{cursor, s, Tag{}, 0});
    out.push_back(TaggedRange{s, e, it->second.tag, it->second.prot});
    cursor = e;
  }
  if (cursor < end) out.push_back(TaggedRange{cursor, end, Tag{}, 0});
  return out;
}

std::optional<TaggedRange> RangeRegistry::find(std::uintptr_t addr) const {
  auto it = ranges_.upper_bound(addr);
  if (it == ranges_.begin()) return std::nullopt;
  --it;
  if (addr >= it->second.end) return std::nullopt;
  return TaggedRange{it->first, it->second.end, it->second.tag, it->second.prot};
}

std::size_t RangeRegistry::count(Tag tag) const {
  auto k = by_tag_.find(tag);
  return k == by_tag_.end() ? 0 : k->second.size();
}

}  // namespace pkeys::core
