// libFuzzer target: the bzImage header parser and the boot planner on arbitrary kernel bytes.
#include <cstddef>
#include <cstdint>
#include <span>

#include "vcpu/bzimage.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> bytes(data, size);
  auto k = moss::boot::parse_bzimage(bytes);
  if (!k.ok()) return 0;
  for (uint64_t mem : {32ull << 20, 512ull << 20, 5ull << 30}) {
    auto plan = moss::boot::plan_boot(*k, mem, size, size % 3000);
    if (plan.ok()) {
      auto zp = moss::boot::build_boot_params(*k, *plan);
      if (zp.size() != 4096) __builtin_trap();
    }
  }
  return 0;
}
