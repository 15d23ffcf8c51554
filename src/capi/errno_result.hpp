// SPDX-License-Identifier: MIT
// The C ABI's return convention: -1 with errno on failure; on success the
// caller's errno is left as it was, whatever pkeys did inside.
#pragma once

#include <cerrno>

namespace pkeys::capi {

class ErrnoResult {
 public:
  ErrnoResult() noexcept : saved_(errno) {}
  // `r` is >= 0 or -errno.
  long operator()(long r) const noexcept {
    if (r < 0) {
      errno = static_cast<int>(-r);
      return -1;
    }
    errno = saved_;
    return r;
  }

 private:
  int saved_;
};

}  // namespace pkeys::capi
