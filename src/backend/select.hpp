// SPDX-License-Identifier: MIT
// Chooses the backend at first use, from PKEYS_BACKEND and what the CPU and
// kernel offer.
#pragma once

#include <memory>
#include <string>

#include "backend/backend.hpp"

namespace pkeys::backend {

struct Selection {
  std::unique_ptr<Backend> backend;  // null: none usable
  std::string reason;                // one sentence for pkeyctl info
};

// PKEYS_BACKEND = auto (default) | x86-pku | emulated.
Selection select_backend();

}  // namespace pkeys::backend
