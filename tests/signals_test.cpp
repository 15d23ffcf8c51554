// SPDX-License-Identifier: MIT
// Signal handlers get the interrupted code's rights on request, and a
// recovery point restores rights after siglongjmp.
#include <gtest/gtest.h>

#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "pkeys/pkeys.h"
#include "pkeys/pkru.h"
#include "probe.hpp"

using namespace pkeys_test;

namespace {

int g_key = -1;
volatile int g_before = -2, g_after = -2, g_enter = -2;
volatile char g_read = 0;
char* g_page = nullptr;

void adopting_handler(int, siginfo_t*, void* uc) {
  g_before = pkey_get(g_key);
  g_enter = pkeys_signal_enter(uc);
  g_after = pkey_get(g_key);
  if (g_after == 0) g_read = *static_cast<volatile char*>(g_page);
}

pkeys_sigjmp_buf g_env;
sigjmp_buf g_plain_env;
void jumping_handler(int) { pkeys_siglongjmp(g_env, 1); }
void plain_jumping_handler(int) { siglongjmp(g_plain_env, 1); }

class Signals : public ::testing::Test {
 protected:
  void SetUp() override {
    g_key = pkey_alloc(0, 0);
    ASSERT_GT(g_key, 0) << errno_str();
    g_page = static_cast<char*>(map_pages(1));
    g_page[0] = 'k';
    ASSERT_EQ(pkey_mprotect(g_page, page_size(), PROT_READ | PROT_WRITE, g_key), 0) << errno_str();
  }
  void TearDown() override {
    ::signal(SIGUSR1, SIG_DFL);
    ASSERT_EQ(pkey_set(g_key, 0), 0) << errno_str();
    ASSERT_EQ(::munmap(g_page, page_size()), 0) << errno_str();
    ASSERT_EQ(pkey_free(g_key), 0) << errno_str();
  }
};

}  // namespace

TEST_F(Signals, HandlerAdoptsTheInterruptedRights) {
  struct sigaction sa {};
  sa.sa_sigaction = adopting_handler;
  sa.sa_flags = SA_SIGINFO;
  ASSERT_EQ(::sigaction(SIGUSR1, &sa, nullptr), 0) << errno_str();
  ASSERT_EQ(::raise(SIGUSR1), 0) << errno_str();
  if (hardware_backend()) {
    EXPECT_EQ(g_before, PKEY_DISABLE_ACCESS) << "handlers start with the default PKRU";
  }
  EXPECT_EQ(g_enter, 0);
  EXPECT_EQ(g_after, 0) << "the interrupted code had read-write";
  EXPECT_EQ(g_read, 'k');
  EXPECT_EQ(pkey_get(g_key), 0) << "the interrupted code resumes with its rights";

  ASSERT_EQ(pkey_set(g_key, PKEY_DISABLE_WRITE), 0) << errno_str();
  ASSERT_EQ(::raise(SIGUSR1), 0) << errno_str();
  EXPECT_EQ(g_after, PKEY_DISABLE_WRITE);
  EXPECT_EQ(pkey_get(g_key), PKEY_DISABLE_WRITE);
}

TEST_F(Signals, SiglongjmpRecoveryPointRestoresRights) {
  ASSERT_NE(::signal(SIGUSR1, jumping_handler), SIG_ERR);
  volatile int jumped = 0;
  if (pkeys_sigsetjmp(g_env, 1) == 0) {
    ::raise(SIGUSR1);
  } else {
    jumped = 1;
  }
  EXPECT_EQ(jumped, 1);
  EXPECT_EQ(pkey_get(g_key), 0) << "rights as at pkeys_sigsetjmp";
  EXPECT_TRUE(can_write(g_page));
}

TEST_F(Signals, RecoveryFromAKeyFault) {
  if (!per_thread_rights())
    GTEST_SKIP() << "backend " << pkeys_backend() << ": rights are process-wide, not saved by the recovery point";
  struct sigaction sa {}, old {};
  sa.sa_handler = jumping_handler;
  sa.sa_flags = SA_NODEFER;
  ASSERT_EQ(::sigaction(SIGSEGV, &sa, &old), 0) << errno_str();
  volatile int recovered = 0;
  if (pkeys_sigsetjmp(g_env, 1) == 0) {
    ASSERT_EQ(pkey_set(g_key, PKEY_DISABLE_ACCESS), 0) << errno_str();
    g_read = *static_cast<volatile char*>(g_page);  // faults
  } else {
    recovered = 1;
  }
  ::sigaction(SIGSEGV, &old, nullptr);
  EXPECT_EQ(recovered, 1);
  EXPECT_EQ(pkey_get(g_key), 0) << "back to the rights of the recovery point";
}

TEST_F(Signals, PlainSiglongjmpKeepsTheHandlersRights) {
  if (!hardware_backend()) GTEST_SKIP() << "backend " << pkeys_backend() << ": handlers do not change rights";
  // The problem pkeys_siglongjmp solves (glibc bug 22396), shown for real.
  ASSERT_NE(::signal(SIGUSR1, plain_jumping_handler), SIG_ERR);
  if (sigsetjmp(g_plain_env, 1) == 0) ::raise(SIGUSR1);
  EXPECT_EQ(pkey_get(g_key), PKEY_DISABLE_ACCESS);
}

TEST_F(Signals, RestoreSkipsKeysFreedSinceTheSave) {
  const int other = pkey_alloc(0, 0);
  ASSERT_GT(other, 0) << errno_str();
  const unsigned long long saved = pkeys_rights_save();
  ASSERT_EQ(pkey_free(other), 0) << errno_str();
  ASSERT_EQ(pkey_set(g_key, PKEY_DISABLE_WRITE), 0) << errno_str();
  pkeys_rights_restore(saved);
  EXPECT_EQ(pkey_get(g_key), per_thread_rights() ? 0 : PKEY_DISABLE_WRITE);
  if (hardware_backend()) {
    EXPECT_EQ(pkeys_pkru_rights(pkeys_rdpkru(), other), unsigned{PKEY_DISABLE_ACCESS})
        << "the freed key keeps no right";
  }
}

// pkeys_fault_pkey from a signal handler that may interrupt the same thread
// anywhere in pkeys, its own handler included (a 1 ms timer with
// SA_NODEFER, so that handlers nest): it must never wait for a lock its
// own thread holds. A stall shows as the test's timeout, never as a timing
// assertion.
namespace {
std::atomic<long> g_fault_pkey_calls{0};
void call_fault_pkey(int, siginfo_t*, void*) {
  siginfo_t si{};
  si.si_signo = SIGSEGV;
  si.si_code = SEGV_ACCERR;
  si.si_addr = &si;
  (void)pkeys_fault_pkey(&si);
  g_fault_pkey_calls.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

TEST(SignalsFaultPkey, InAHandlerNeverWaitsForItsOwnThread) {
  const int k = pkey_alloc(0, 0);
  ASSERT_GT(k, 0);
  void* p = map_pages(1);
  ASSERT_EQ(pkey_mprotect(p, page_size(), PROT_READ | PROT_WRITE, k), 0);
  struct sigaction sa {}, old {};
  sa.sa_sigaction = call_fault_pkey;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART;
  ASSERT_EQ(::sigaction(SIGALRM, &sa, &old), 0);
  itimerval every_ms{{0, 1000}, {0, 1000}}, off{};
  ASSERT_EQ(::setitimer(ITIMER_REAL, &every_ms, nullptr), 0);
  long sets = 0;
  for (; sets < 20000 || g_fault_pkey_calls.load() < 50; ++sets) {
    ASSERT_EQ(pkey_set(k, sets & 1 ? PKEY_DISABLE_WRITE : 0), 0);
    if (sets > 50'000'000) break;  // the timer never fired: the check below says so
  }
  ::setitimer(ITIMER_REAL, &off, nullptr);
  ::sigaction(SIGALRM, &old, nullptr);
  EXPECT_GE(g_fault_pkey_calls.load(), 50) << "the timer's handler ran";
  ASSERT_EQ(pkey_set(k, 0), 0);
  ASSERT_EQ(::munmap(p, page_size()), 0);
  EXPECT_EQ(pkey_free(k), 0);
}

namespace {

// Single-stepping: a SIGTRAP after every instruction of the stepped code.
// The handler adopts the interrupted rights at one chosen step only (an
// adoption at every step would hide what an earlier one broke), so that
// running the same switch once per step puts the adopting handler at each
// instruction boundary of it in turn.
volatile sig_atomic_t g_stop_stepping = 0;
volatile long g_step = 0, g_adopt_at = -1;
constexpr greg_t kTrapFlag = 0x100;

void stepping_handler(int, siginfo_t*, void* uc) {
  const long step = g_step;
  g_step = step + 1;
  if (step == g_adopt_at) (void)pkeys_signal_enter(uc);
  auto* ctx = static_cast<ucontext_t*>(uc);
  if (g_stop_stepping) ctx->uc_mcontext.gregs[REG_EFL] &= ~kTrapFlag;
}

// Sets `key` to `rights`, single-stepped; returns the number of steps.
[[gnu::noinline]] long step_through(int key, unsigned rights, long adopt_at) {
  g_step = 0;
  g_adopt_at = adopt_at;
  g_stop_stepping = 0;
  __asm__ volatile("pushfq\n\torq $0x100, (%%rsp)\n\tpopfq" ::: "memory", "cc");
  (void)pkey_set(key, rights);
  g_stop_stepping = 1;
  __asm__ volatile("" ::: "memory");
  return g_step;
}

}  // namespace

// A handler that adopts the interrupted rights, landing inside a switch
// between its two edits of the thread's PKRU copy, must leave the copy
// whole: it restarts the switch. Otherwise the copy kept both the old
// and the new bits, and cross-thread changes compared against a copy
// that lies.
TEST_F(Signals, AdoptingInsideASwitchKeepsTheThreadsCopyTrue) {
  if (!hardware_backend()) GTEST_SKIP() << "backend " << pkeys_backend() << ": no PKRU to adopt";
  struct sigaction sa {}, old {};
  sa.sa_sigaction = stepping_handler;
  sa.sa_flags = SA_SIGINFO;
  ASSERT_EQ(::sigaction(SIGTRAP, &sa, &old), 0) << errno_str();
  const unsigned kRights[] = {0, PKEY_DISABLE_WRITE, PKEY_DISABLE_ACCESS};
  const long steps = step_through(g_key, 0, -1);
  EXPECT_GT(steps, 10) << "the switch was single-stepped";
  for (unsigned from : kRights)
    for (unsigned to : kRights)
      for (long at = 0; at < steps; ++at) {
        ASSERT_EQ(pkey_set(g_key, from), 0) << errno_str();
        step_through(g_key, to, at);
        EXPECT_EQ(pkey_get(g_key), static_cast<int>(to));
        EXPECT_EQ(pkeys_thread_pkru, pkeys_rdpkru())
            << "from rights " << from << " to " << to << ", adopted at step " << at;
      }
  ::sigaction(SIGTRAP, &old, nullptr);
}

namespace {
pkeys_sigjmp_buf g_jump_env;
void jump_back(int) { pkeys_siglongjmp(g_jump_env, 1); }

// While it lives, SIGUSR1 jumps back to g_jump_env.
class JumpOnSigusr1 {
 public:
  JumpOnSigusr1() {
    struct sigaction sa {};
    sa.sa_handler = jump_back;
    installed_ = ::sigaction(SIGUSR1, &sa, &old_) == 0;
  }
  ~JumpOnSigusr1() {
    if (installed_) ::sigaction(SIGUSR1, &old_, nullptr);
  }
  JumpOnSigusr1(const JumpOnSigusr1&) = delete;
  JumpOnSigusr1& operator=(const JumpOnSigusr1&) = delete;
  bool installed() const { return installed_; }

 private:
  struct sigaction old_ {};
  bool installed_ = false;
};
}  // namespace

// A recovery point saved while this thread held read-write on a key; the
// key is freed and its number handed to a new owner before the jump. The
// jump must not give the new owner's key the old owner's rights.
TEST(SignalsJump, NeverGivesAReusedNumberTheOldOwnersRights) {
  if (!per_thread_rights()) GTEST_SKIP() << "backend " << pkeys_backend() << ": rights are process-wide, a jump restores none";
  const int old_key = pkey_alloc(0, 0);
  ASSERT_GT(old_key, 0) << errno_str();
  JumpOnSigusr1 jumper;
  ASSERT_TRUE(jumper.installed()) << errno_str();
  char* volatile secret = nullptr;  // set between the setjmp and the jump
  volatile int new_key = -1;
  if (pkeys_sigsetjmp(g_jump_env, 1) == 0) {
    ASSERT_EQ(pkey_free(old_key), 0) << errno_str();
    new_key = pkey_alloc(0, PKEY_DISABLE_ACCESS);  // the next owner: no access for this thread
    ASSERT_EQ(new_key, old_key) << "the lowest free number comes back";
    secret = static_cast<char*>(map_pages(1));
    secret[0] = 's';
    ASSERT_EQ(pkey_mprotect(secret, page_size(), PROT_READ | PROT_WRITE, new_key), 0) << errno_str();
    ::raise(SIGUSR1);
    ADD_FAILURE() << "no jump";
  }
  EXPECT_EQ(pkey_get(new_key), PKEY_DISABLE_ACCESS) << "the jump gave the new owner's key the old owner's rights";
  EXPECT_FALSE(can_read(secret));
  ASSERT_EQ(::munmap(secret, page_size()), 0) << errno_str();
  EXPECT_EQ(pkey_free(new_key), 0) << errno_str();
}

// A recovery point saved with a vkey open (read-write on its cache key);
// before the jump the vkey is closed and the cache key loaded with another
// vkey whose base denies access. The jump must not give this thread the
// old bits on that key, that is the other vkey's pages.
TEST(SignalsJump, NeverRestoresACacheKeyThatHoldsAnotherVKey) {
  pkeys_vkey_stats st{};
  ASSERT_EQ(pkeys_vkey_get_stats(&st), 0) << errno_str();
  if (st.capacity == 0) GTEST_SKIP() << "no vkey cache on this backend (it has no per-thread rights)";
  const int capacity = static_cast<int>(st.capacity);
  ASSERT_EQ(pkeys_vkey_set_cache_limit(1), 0) << errno_str();
  const int first = pkeys_vkey_create(PKEY_DISABLE_ACCESS);
  const int second = pkeys_vkey_create(PKEY_DISABLE_ACCESS);
  ASSERT_GT(first, 0) << errno_str();
  ASSERT_GT(second, 0) << errno_str();
  char* mine = static_cast<char*>(map_pages(1));
  char* theirs = static_cast<char*>(map_pages(1));
  theirs[0] = 't';
  ASSERT_EQ(pkeys_vkey_mprotect(mine, page_size(), PROT_READ | PROT_WRITE, first), 0) << errno_str();
  ASSERT_EQ(pkeys_vkey_mprotect(theirs, page_size(), PROT_READ | PROT_WRITE, second), 0) << errno_str();
  JumpOnSigusr1 jumper;
  ASSERT_TRUE(jumper.installed()) << errno_str();
  ASSERT_EQ(pkeys_vkey_begin(first, 0), 0) << errno_str();
  if (pkeys_sigsetjmp(g_jump_env, 1) == 0) {
    ASSERT_EQ(pkeys_vkey_end(first), 0) << errno_str();
    // The one cache key now holds `second` (its base: no access).
    ASSERT_EQ(pkeys_vkey_begin(second, PKEY_DISABLE_ACCESS), 0) << errno_str();
    ASSERT_EQ(pkeys_vkey_end(second), 0) << errno_str();
    ::raise(SIGUSR1);
    ADD_FAILURE() << "no jump";
  }
  EXPECT_FALSE(can_read(theirs)) << "the jump opened another vkey's pages";
  EXPECT_EQ(pkeys_vkey_end(first), -1) << "closed before the jump, it stays closed";
  ::munmap(mine, page_size());
  ::munmap(theirs, page_size());
  EXPECT_EQ(pkeys_vkey_destroy(first), 0) << errno_str();
  EXPECT_EQ(pkeys_vkey_destroy(second), 0) << errno_str();
  EXPECT_EQ(pkeys_vkey_set_cache_limit(capacity), 0) << errno_str();
}

// The vkeys this thread opened after the recovery point are closed by the
// jump (their pins would otherwise hold them open for good); those open at
// the recovery point stay open.
TEST(SignalsJump, ClosesTheVKeysOpenedSinceTheRecoveryPoint) {
  const int outer = pkeys_vkey_create(PKEY_DISABLE_ACCESS);
  const int inner = pkeys_vkey_create(PKEY_DISABLE_ACCESS);
  ASSERT_GT(outer, 0) << errno_str();
  ASSERT_GT(inner, 0) << errno_str();
  char* page = static_cast<char*>(map_pages(1));
  ASSERT_EQ(pkeys_vkey_mprotect(page, page_size(), PROT_READ | PROT_WRITE, inner), 0) << errno_str();
  JumpOnSigusr1 jumper;
  ASSERT_TRUE(jumper.installed()) << errno_str();
  ASSERT_EQ(pkeys_vkey_begin(outer, 0), 0) << errno_str();
  if (pkeys_sigsetjmp(g_jump_env, 1) == 0) {
    ASSERT_EQ(pkeys_vkey_begin(inner, 0), 0) << errno_str();
    ::raise(SIGUSR1);
    ADD_FAILURE() << "no jump";
  }
  EXPECT_FALSE(can_read(page)) << "the vkey opened since the recovery point is still open";
  EXPECT_EQ(pkeys_vkey_set(inner, 0), 0) << "closed: its base can change; " << errno_str();
  EXPECT_EQ(pkeys_vkey_end(outer), 0) << "open at the recovery point, still open; " << errno_str();
  ::munmap(page, page_size());
  EXPECT_EQ(pkeys_vkey_destroy(inner), 0) << errno_str();
  EXPECT_EQ(pkeys_vkey_destroy(outer), 0) << errno_str();
}

namespace {
// Single-stepping a vkey's end; at step g_jump_at the handler jumps back to
// g_jump_env instead of returning.
volatile long g_jump_at = -1;
void stepping_jump_handler(int, siginfo_t*, void* uc) {
  const long step = g_step;
  g_step = step + 1;
  auto* ctx = static_cast<ucontext_t*>(uc);
  if (step == g_jump_at) pkeys_siglongjmp(g_jump_env, 1);  // the handler's flags: no trap flag
  if (g_stop_stepping) ctx->uc_mcontext.gregs[REG_EFL] &= ~kTrapFlag;
}

// Ends `vkey`, single-stepped, jumping out at step `jump_at` (-1: never);
// returns the number of steps when it was not left by the jump.
[[gnu::noinline]] long step_through_end(int vkey, long jump_at) {
  g_step = 0;
  g_jump_at = jump_at;
  g_stop_stepping = 0;
  __asm__ volatile("pushfq\n\torq $0x100, (%%rsp)\n\tpopfq" ::: "memory", "cc");
  (void)pkeys_vkey_end(vkey);
  g_stop_stepping = 1;
  __asm__ volatile("" ::: "memory");
  return g_step;
}
}  // namespace

// A jump out of a handler that interrupted a vkey's end, at any instruction,
// back to a recovery point saved before the vkey's begin: the jump closes
// the vkey if the end had not, and never twice (a second unpin would wreck
// the vkey's state: a live vkey that fails every call). A jump that lands
// after the end popped the entry but before it unpinned leaves the pin, so
// the jumps run in a child: the pin goes with it.
namespace {
int jump_out_of_each_step_of_end(int v) {  // in the child: the failures, printed
  int failures = 0;
  auto fail = [&failures](const char* what, long at) {
    std::fprintf(stderr, "%s, at step %ld: %s\n", what, at, errno_str().c_str());
    ++failures;
  };
  if (pkeys_vkey_begin(v, PKEY_DISABLE_WRITE) != 0) return fail("begin", -1), failures;
  const long steps = step_through_end(v, -1);
  if (steps <= 10) fail("the end was not single-stepped", steps);
  for (long at = 0; at < steps; ++at) {  // not changed between the save and the jump
    if (pkeys_sigsetjmp(g_jump_env, 1) == 0) {
      if (pkeys_vkey_begin(v, PKEY_DISABLE_WRITE) != 0) {
        fail("begin before the jump", at);
        break;
      }
      step_through_end(v, at);
      fail("no jump", at);
    }
    if (pkeys_vkey_end(v) != -1) fail("open after the end and the jump", at);
    if (pkeys_vkey_get(v) != PKEY_DISABLE_ACCESS) fail("its base is gone (the vkey is wrecked)", at);
    if (pkeys_vkey_begin(v, 0) != 0 || pkeys_vkey_end(v) != 0) fail("it no longer opens (the vkey is wrecked)", at);
  }
  return failures;
}
}  // namespace

TEST(SignalsJump, AJumpOutOfAVKeysEndClosesItOnce) {
  pkeys_vkey_stats st{};
  ASSERT_EQ(pkeys_vkey_get_stats(&st), 0) << errno_str();
  if (st.capacity == 0) GTEST_SKIP() << "no vkey cache on this backend (it has no per-thread rights)";
  const int v = pkeys_vkey_create(PKEY_DISABLE_ACCESS);
  ASSERT_GT(v, 0) << errno_str();
  ASSERT_EQ(pkeys_vkey_begin(v, 0), 0) << errno_str();  // cached from here on
  ASSERT_EQ(pkeys_vkey_end(v), 0) << errno_str();
  const pid_t child = ::fork();
  ASSERT_GE(child, 0) << errno_str();
  if (child == 0) {
    struct sigaction sa {};
    sa.sa_sigaction = stepping_jump_handler;
    sa.sa_flags = SA_SIGINFO;
    if (::sigaction(SIGTRAP, &sa, nullptr) != 0) ::_exit(2);
    ::_exit(jump_out_of_each_step_of_end(v) == 0 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child) << errno_str();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "the child's jumps (its failures are above), status " << status;
  EXPECT_EQ(pkeys_vkey_destroy(v), 0) << errno_str();
}
