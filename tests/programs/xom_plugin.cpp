// SPDX-License-Identifier: MIT
// The library xom_probe dlopens: its code must become execute-only too, be
// callable, and throw through the unwinder.
#include <stdexcept>

extern "C" __attribute__((visibility("default"))) int xom_plugin_add(int a, int b) { return a + b; }

extern "C" __attribute__((visibility("default"))) void xom_plugin_throw(int value) {
  throw std::runtime_error("thrown by xom_plugin: " + std::to_string(value));
}
