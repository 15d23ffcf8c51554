// SPDX-License-Identifier: MIT
// Worker: a thread that runs jobs handed to it, so a test can act inside a
// thread that existed before a key, and look at its rights from there.
// Stopped and joined when it leaves scope, however the test ends.
#pragma once

#include <sys/syscall.h>
#include <unistd.h>

#include <condition_variable>
#include <functional>
#include <mutex>

#include "pkeys/pkeys.h"
#include "pkeys/pkru.h"
#include "probe.hpp"

namespace pkeys_test {

inline pid_t gettid_() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

class Worker {
 public:
  Worker() : thread_([this] { loop(); }, [this] { run([&] { stop_ = true; }); }) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return tid_ != 0; });
  }
  pid_t tid() const { return tid_; }
  // Runs `job` in the worker and returns once it is done.
  void run(std::function<void()> job) {
    std::unique_lock lock(mu_);
    job_ = std::move(job);
    cv_.notify_all();
    cv_.wait(lock, [&] { return !job_; });
  }
  // Its rights on `key` by pkey_get (-2 if the job did not run).
  int rights(int key) {
    int r = -2;
    run([&] { r = pkey_get(key); });
    return r;
  }
  // Its rights on `key` from its own PKRU: also for a number that is not
  // allocated (pkey_get refuses those). Hardware only.
  unsigned register_rights(int key) {
    unsigned r = 0;
    run([&] { r = pkeys_pkru_rights(pkeys_rdpkru(), key); });
    return r;
  }
  // Whether `a` at `p` succeeds from this thread.
  bool can(void* p, Access a) {
    bool ok = false;
    run([&] { ok = !probe(p, a).faulted; });
    return ok;
  }

 private:
  void loop() {
    {
      std::lock_guard lock(mu_);
      tid_ = gettid_();
      cv_.notify_all();
    }
    while (!stop_) {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return static_cast<bool>(job_); });
      job_();
      job_ = nullptr;
      cv_.notify_all();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> job_;
  pid_t tid_ = 0;
  bool stop_ = false;
  ScopedThread thread_;  // last: constructed after, destroyed before the state it uses
};

}  // namespace pkeys_test
