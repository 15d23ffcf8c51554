// SPDX-License-Identifier: MIT
// A JIT code buffer that is never writable and executable at once.
//
// pkeys' code region maps the same memory twice: an executable view the
// program calls into, and a writable view that a virtual key keeps
// read-only except inside a write scope of the emitting thread. Under
// PKEYS_WX=deny (or `pkeyctl run --deny-wx`) this still works: no mapping
// ever has PROT_WRITE and PROT_EXEC together.
#include <pkeys/pkeys.h>

#include <cstdio>
#include <cstring>
#include <vector>

namespace {

// x86-64 for: int f(int x) { return x * k + c; }
std::vector<unsigned char> compile_affine(int k, int c) {
  std::vector<unsigned char> code = {0x69, 0xc7};  // imul eax, edi, imm32
  code.insert(code.end(), reinterpret_cast<unsigned char*>(&k), reinterpret_cast<unsigned char*>(&k) + 4);
  code.push_back(0x05);  // add eax, imm32
  code.insert(code.end(), reinterpret_cast<unsigned char*>(&c), reinterpret_cast<unsigned char*>(&c) + 4);
  code.push_back(0xc3);  // ret
  return code;
}

}  // namespace

int main() {
  pkeys_set_wx_policy(PKEYS_WX_DENY);
  pkeys_code_region region{};
  if (pkeys_code_region_create(&region, 4096) != 0) {
    std::perror("pkeys_code_region_create");
    return 1;
  }
  const auto code = compile_affine(3, 4);
  if (pkeys_code_write_begin(&region) != 0) return 1;  // write scope: this thread only
  std::memcpy(region.write, code.data(), code.size());
  pkeys_code_write_end(&region);  // read-only again

  int (*f)(int);
  void* entry = region.exec;
  std::memcpy(&f, &entry, sizeof f);
  std::printf("jit: f(x) = 3x + 4, f(5) = %d (backend %s)\n", f(5), pkeys_backend());
  const int result = f(5);
  pkeys_code_region_destroy(&region);
  return result == 19 ? 0 : 1;
}
