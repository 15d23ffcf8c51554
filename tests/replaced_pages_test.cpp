// SPDX-License-Identifier: MIT
// Pages unmapped and mapped again behind pkeys' back (raw system calls, or
// glibc's malloc, whose mmap and munmap are not the interposed ones): the
// new mapping is not pkeys', and pkeys never changes its protection.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <vector>

#include "pkeys/pkeys.h"
#include "probe.hpp"

using namespace pkeys_test;

namespace {

// The recorded ranges of `key`.
int ranges_of(int key) {
  std::vector<pkeys_range> all(4096);
  const int n = pkeys_get_ranges(all.data(), static_cast<int>(all.size()));
  int count = 0;
  for (int i = 0; i < n && i < static_cast<int>(all.size()); ++i) count += all[static_cast<std::size_t>(i)].pkey == key;
  return count;
}

void* raw_mmap_fixed(void* at, std::size_t len, int prot) {
  return reinterpret_cast<void*>(
      ::syscall(SYS_mmap, at, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0));
}

// Whether the kernel answers PROCMAP_QUERY (Linux 6.11+), what lets a
// rights switch ask about the pages it changes; older kernels are asked
// only at a free.
bool switch_can_ask() {
  struct {
    std::uint64_t size, flags, addr, vma_start, vma_end, vma_flags, page_size, offset, inode;
    std::uint32_t dev_major, dev_minor, name_size, build_id_size;
    std::uint64_t name_addr, build_id_addr;
  } q{};
  q.size = sizeof q;
  q.flags = 0x10;  // covering or next
  const int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::ioctl(fd, 0xc0686611, &q) == 0;
  ::close(fd);
  return ok;
}

// `pages` read-write pages tagged with a new key (*key, *p).
void tag_pages(std::size_t pages, int* key, char** p) {
  *key = pkey_alloc(0, 0);
  ASSERT_GT(*key, 0) << errno_str();
  *p = static_cast<char*>(map_pages(pages));
  ASSERT_EQ(pkey_mprotect(*p, pages * page_size(), PROT_READ | PROT_WRITE, *key), 0) << errno_str();
}

// Someone else's mapping of `prot` over [at, at+len), pkeys unaware: a raw
// munmap and a raw mmap.
void replace_behind_pkeys_back(char* at, std::size_t len, int prot) {
  ASSERT_EQ(::syscall(SYS_munmap, at, len), 0) << errno_str();
  ASSERT_EQ(raw_mmap_fixed(at, len, prot), at) << errno_str();
}

#define SKIP_UNLESS_A_SWITCH_CAN_ASK()                                                                   \
  if (!switch_can_ask())                                                                                 \
  GTEST_SKIP() << "this kernel lacks PROCMAP_QUERY (Linux 6.11+): a switch trusts the records, and only " \
                  "a free drops those of replaced pages"

}  // namespace

TEST(ReplacedPages, AFreeDropsTheRecordsOfReplacedPages) {
  int key;
  char* p;
  ASSERT_NO_FATAL_FAILURE(tag_pages(2, &key, &p));
  const std::size_t len = 2 * page_size();
  ASSERT_NO_FATAL_FAILURE(replace_behind_pkeys_back(p, len, PROT_READ));
  EXPECT_EQ(pkeys_free_strict(key), 0) << "the key's pages are gone: " << errno_str();
  EXPECT_EQ(ranges_of(key), 0) << "records of pages that are no longer the key's";
  EXPECT_TRUE(can_read(p)) << "the free changed a mapping pkeys did not tag";
  ASSERT_EQ(::munmap(p, len), 0) << errno_str();
}

TEST(ReplacedPages, AMappingPkeysDidNotTagKeepsItsProtection) {
  SKIP_UNLESS_A_SWITCH_CAN_ASK();
  int key;
  char* p;
  ASSERT_NO_FATAL_FAILURE(tag_pages(2, &key, &p));
  const std::size_t len = 2 * page_size();
  // Someone else's read-only mapping at the same address, pkeys unaware.
  ASSERT_NO_FATAL_FAILURE(replace_behind_pkeys_back(p, len, PROT_READ));

  ASSERT_EQ(pkey_set(key, PKEY_DISABLE_ACCESS), 0) << errno_str();
  EXPECT_TRUE(can_read(p)) << "pkey_set changed a mapping pkeys did not tag";
  EXPECT_TRUE(can_read(p + page_size()));
  ASSERT_EQ(pkey_set(key, 0), 0) << errno_str();
  EXPECT_FALSE(can_write(p)) << "pkey_set made a read-only mapping it did not tag writable";
  EXPECT_EQ(pkey_free(key), 0) << errno_str();
  EXPECT_EQ(ranges_of(key), 0) << "records of pages that are no longer the key's";
  ASSERT_EQ(::munmap(p, len), 0) << errno_str();
}

TEST(ReplacedPages, OnlyTheReplacedPartLosesItsRecord) {
  SKIP_UNLESS_A_SWITCH_CAN_ASK();
  int key;
  char* p;
  ASSERT_NO_FATAL_FAILURE(tag_pages(3, &key, &p));
  const std::size_t len = 3 * page_size();
  char* middle = p + page_size();
  ASSERT_NO_FATAL_FAILURE(replace_behind_pkeys_back(middle, page_size(), PROT_READ | PROT_EXEC));

  ASSERT_EQ(pkey_set(key, PKEY_DISABLE_ACCESS), 0) << errno_str();
  EXPECT_FALSE(can_read(p)) << "the key's own pages are still protected";
  EXPECT_FALSE(can_read(p + 2 * page_size()));
  EXPECT_TRUE(can_read(middle)) << "the replaced page is not the key's";
  ASSERT_EQ(pkey_set(key, 0), 0) << errno_str();
  EXPECT_TRUE(can_write(p));
  EXPECT_FALSE(can_write(middle));
  ASSERT_EQ(::munmap(p, len), 0) << errno_str();
  EXPECT_EQ(pkey_free(key), 0) << errno_str();
}

// A forked child asks about its own pages, not its parent's (pkeys keeps
// the question's descriptor open between switches).
TEST(ReplacedPages, AForkedChildAsksAboutItsOwnPages) {
  SKIP_UNLESS_A_SWITCH_CAN_ASK();
  int key;
  char* p;
  ASSERT_NO_FATAL_FAILURE(tag_pages(1, &key, &p));
  const std::size_t len = page_size();
  ASSERT_EQ(pkey_set(key, PKEY_DISABLE_WRITE), 0) << errno_str();  // asked once already
  ASSERT_EQ(pkey_set(key, 0), 0) << errno_str();
  const pid_t child = ::fork();
  ASSERT_GE(child, 0) << errno_str();
  if (child == 0) {
    if (::syscall(SYS_munmap, p, len) != 0 || raw_mmap_fixed(p, len, PROT_READ) != p) ::_exit(2);
    if (pkey_set(key, PKEY_DISABLE_ACCESS) != 0) ::_exit(3);
    ::_exit(can_read(p) ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child) << errno_str();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "the child's pkey_set changed a mapping of the child's that pkeys did not tag (status " << status << ")";
  EXPECT_TRUE(can_write(p)) << "the parent's own pages are untouched";
  ASSERT_EQ(::munmap(p, len), 0) << errno_str();
  EXPECT_EQ(pkey_free(key), 0) << errno_str();
}
