// SPDX-License-Identifier: MIT
// A parser whose heap is a virtual key.
//
// Each document gets its own arena tagged with its own virtual key, closed
// by default. Only while a parse runs (inside a vkey_scope) can the thread
// touch that arena; other documents' arenas stay closed, however many there
// are (virtual keys are not limited to the hardware's 15).
#include <pkeys/pkeys.hpp>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Arena {
  pkeys::vkey domain;
  void* base;
  std::size_t size, used = 0;
  void* allocate(std::size_t n) {
    if (used + n > size) return nullptr;
    void* p = static_cast<char*>(base) + used;
    used += n;
    return p;
  }
};

// Splits `text` into words kept in the arena; returns how many.
int parse_words(Arena& arena, const char* text) {
  pkeys::vkey_scope open(arena.domain, pkeys::rights::read_write());
  if (open.error()) return -1;
  int words = 0;
  for (const char* p = text; *p;) {
    while (*p == ' ') ++p;
    const char* start = p;
    while (*p && *p != ' ') ++p;
    if (p == start) continue;
    auto* copy = static_cast<char*>(arena.allocate(static_cast<std::size_t>(p - start) + 1));
    if (!copy) return -1;
    std::memcpy(copy, start, static_cast<std::size_t>(p - start));
    copy[p - start] = 0;
    ++words;
  }
  return words;
}

}  // namespace

int main() {
  const char* documents[] = {"the quick brown fox", "jumps over", "the lazy dog and then some"};
  std::vector<Arena> arenas;
  for (std::size_t i = 0; i < std::size(documents); ++i) {
    auto domain = pkeys::vkey::create(pkeys::rights::no_access());
    void* base = ::mmap(nullptr, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!domain || base == MAP_FAILED || domain->protect(base, 65536, PROT_READ | PROT_WRITE)) return 1;
    arenas.push_back(Arena{std::move(*domain), base, 65536});
  }
  int total = 0;
  for (std::size_t i = 0; i < arenas.size(); ++i) {
    const int words = parse_words(arenas[i], documents[i]);
    std::printf("document %zu: %d words in an arena of its own (vkey %d)\n", i, words, arenas[i].domain.id());
    total += words;
  }
  pkeys_vkey_stats stats{};
  pkeys_vkey_get_stats(&stats);
  std::printf("vkey cache: %llu hits, %llu misses (backend %s)\n", stats.hits, stats.misses, pkeys_backend());
  for (Arena& a : arenas) ::munmap(a.base, a.size);  // then each vkey is destroyed with its Arena
  return total == 12 ? 0 : 1;
}
