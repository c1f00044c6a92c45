// Parsing of a Linux bzImage (x86 boot protocol, Documentation/x86/boot.rst) and the plan for
// placing it, its command line and an initrd in guest memory.
//
// Both functions are pure: they read bytes the user gave us (not the guest) and never touch
// guest memory, so they are unit-tested and fuzzed directly.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"

namespace moss::boot {

struct BzImage {
  uint16_t protocol = 0;        // Boot protocol version, e.g. 0x020f.
  uint32_t setup_bytes = 0;     // Real-mode setup code (including the boot sector).
  uint32_t kernel_offset = 0;   // File offset of the protected-mode kernel (== setup_bytes).
  uint32_t kernel_size = 0;     // Bytes of protected-mode kernel in the file.
  uint32_t init_size = 0;       // Memory the kernel needs from its load address to boot.
  uint32_t initrd_addr_max = 0;
  uint32_t cmdline_size = 0;    // Maximum command line length, excluding the NUL.
  bool is_linux = false;        // The header points at a kernel version string.
  std::string kernel_version;   // e.g. "6.1.0-56-amd64 (debian-kernel@...) #1 SMP ...".
  std::vector<uint8_t> setup_header;  // Bytes 0x1f1.. of the image, copied into boot_params.
};

// The most of a bzImage's head that parse_bzimage reads: the setup code (at most 1 + 255
// sectors), which holds the header and the version string.
constexpr size_t kMaxSetupBytes = 256 * 512;
constexpr uint64_t kMaxKernelFileBytes = 256ull << 20;

// Parses and validates the header, given the first bytes of the file (at least its setup
// code; kMaxSetupBytes is always enough) and the file's size. Requires boot protocol >= 2.12
// and a kernel with a 64-bit entry point (XLF_KERNEL_64), loadable high.
Result<BzImage> parse_bzimage(std::span<const uint8_t> head, uint64_t file_size);
inline Result<BzImage> parse_bzimage(std::span<const uint8_t> image) { return parse_bzimage(image, image.size()); }

struct E820Entry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;  // 1 = RAM, 2 = reserved.
};

constexpr uint64_t kBootParamsGpa = 0x7000;
constexpr uint64_t kPml4Gpa = 0x9000;
constexpr uint64_t kGdtGpa = 0x500;
constexpr uint64_t kCmdlineGpa = 0x20000;
constexpr uint64_t kMpTableGpa = 0x9fc00;   // Last KiB of base memory: Linux scans it.
constexpr uint64_t kKernelGpa = 0x100000;   // 1 MiB, where code32_start points.
constexpr uint64_t kPciHoleStart = 0xc0000000;  // Low RAM ends here; [3 GiB, 4 GiB) is MMIO.
constexpr uint64_t kHighRamStart = 0x100000000;
// The compressed kernel decompresses itself to at least LOAD_PHYSICAL_ADDR (16 MiB on x86_64),
// so an initrd must sit above that plus init_size.
constexpr uint64_t kKernelRunGpa = 0x1000000;
constexpr uint64_t kMinMemBytes = 32ull << 20;

struct MemoryMap {
  uint64_t low_bytes = 0;   // RAM at [0, low_bytes).
  uint64_t high_bytes = 0;  // RAM at [4 GiB, 4 GiB + high_bytes).
};
MemoryMap memory_map(uint64_t mem_bytes);

struct BootPlan {
  MemoryMap map;
  uint64_t initrd_gpa = 0;
  uint64_t initrd_size = 0;
  uint64_t entry64 = 0;  // 64-bit entry point: load address + 0x200.
  std::vector<E820Entry> e820;
};

// Decides where everything goes. Errors name what does not fit and how much memory it needs.
Result<BootPlan> plan_boot(const BzImage& kernel, uint64_t mem_bytes, uint64_t initrd_size,
                           size_t cmdline_len);

// The 4096-byte "zero page" (struct boot_params) for the plan.
std::vector<uint8_t> build_boot_params(const BzImage& kernel, const BootPlan& plan);

}  // namespace moss::boot
