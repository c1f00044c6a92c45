#include "vcpu/bzimage.h"

#include <cstring>

namespace moss::boot {
namespace {

template <typename T>
T load(std::span<const uint8_t> b, size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}
template <typename T>
void store(std::vector<uint8_t>& b, size_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof v);
}

// Offsets in the image (and in boot_params) from Documentation/x86/boot.rst.
constexpr size_t kSetupSects = 0x1f1;
constexpr size_t kBootFlag = 0x1fe;
constexpr size_t kJump = 0x200;
constexpr size_t kHeaderMagic = 0x202;
constexpr size_t kVersion = 0x206;
constexpr size_t kKernelVersion = 0x20e;
constexpr size_t kTypeOfLoader = 0x210;
constexpr size_t kLoadFlags = 0x211;
constexpr size_t kRamdiskImage = 0x218;
constexpr size_t kRamdiskSize = 0x21c;
constexpr size_t kCmdLinePtr = 0x228;
constexpr size_t kInitrdAddrMax = 0x22c;
constexpr size_t kXLoadFlags = 0x236;
constexpr size_t kCmdlineSize = 0x238;
constexpr size_t kInitSize = 0x260;
constexpr size_t kHeaderEndMin = 0x268;  // Through handover_offset: protocol 2.12 layout.

constexpr uint8_t kLoadedHigh = 0x01;
constexpr uint16_t kXlfKernel64 = 0x01;

// boot_params fields outside the setup header.
constexpr size_t kExtRamdiskImage = 0x0c0;
constexpr size_t kExtRamdiskSize = 0x0c4;
constexpr size_t kExtCmdLinePtr = 0x0c8;
constexpr size_t kE820Entries = 0x1e8;
constexpr size_t kE820Table = 0x2d0;
constexpr size_t kE820Max = 128;

}  // namespace

Result<BzImage> parse_bzimage(std::span<const uint8_t> image, uint64_t file_size) {
  if (image.size() < 0x400 || file_size < image.size()) return make_error("the kernel image is too small to be a bzImage");
  if (file_size > kMaxKernelFileBytes) return make_error("the kernel image is larger than 256 MiB");
  if (load<uint16_t>(image, kBootFlag) != 0xaa55 || load<uint32_t>(image, kHeaderMagic) != 0x53726448) {
    return make_error("the kernel image is not a Linux bzImage (no boot sector signature or \"HdrS\" header)");
  }
  BzImage k;
  k.protocol = load<uint16_t>(image, kVersion);
  if (k.protocol < 0x020c) {
    return make_error("the kernel's boot protocol is too old (need 2.12 or newer for a 64-bit entry)");
  }
  if (!(image[kLoadFlags] & kLoadedHigh)) return make_error("the kernel image is a zImage, not a bzImage");
  if (!(load<uint16_t>(image, kXLoadFlags) & kXlfKernel64)) {
    return make_error("the kernel has no 64-bit entry point (XLF_KERNEL_64 is not set)");
  }
  uint32_t sects = image[kSetupSects];
  if (sects == 0) sects = 4;  // Boot protocol: 0 means 4.
  k.setup_bytes = (sects + 1) * 512;
  if (k.setup_bytes >= file_size) return make_error("the kernel image is truncated (setup code runs past its end)");
  if (k.setup_bytes > image.size()) return make_error("the kernel image's setup code was not read whole");
  k.kernel_offset = k.setup_bytes;
  k.kernel_size = static_cast<uint32_t>(file_size - k.setup_bytes);
  k.init_size = load<uint32_t>(image, kInitSize);
  if (k.init_size < k.kernel_size) k.init_size = k.kernel_size;
  k.initrd_addr_max = load<uint32_t>(image, kInitrdAddrMax);
  k.cmdline_size = load<uint32_t>(image, kCmdlineSize);
  size_t header_end = kJump + 2 + image[kJump + 1];  // The jump at 0x200 skips the header.
  if (header_end < kHeaderEndMin || header_end > k.setup_bytes) {
    return make_error("the kernel's setup header has an impossible length");
  }
  k.setup_header.assign(image.begin() + kSetupSects, image.begin() + static_cast<long>(header_end));
  uint16_t ver_ptr = load<uint16_t>(image, kKernelVersion);
  if (ver_ptr != 0 && ver_ptr + 0x200u < k.setup_bytes) {
    size_t off = ver_ptr + 0x200u;
    size_t end = off;
    while (end < k.setup_bytes && end - off < 256 && image[end] != 0) end++;
    k.kernel_version.assign(reinterpret_cast<const char*>(image.data() + off), end - off);
    k.is_linux = !k.kernel_version.empty();
  }
  return k;
}

MemoryMap memory_map(uint64_t mem_bytes) {
  MemoryMap m;
  m.low_bytes = mem_bytes < kPciHoleStart ? mem_bytes : kPciHoleStart;
  m.high_bytes = mem_bytes - m.low_bytes;
  return m;
}

static std::string mib(uint64_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; }

Result<BootPlan> plan_boot(const BzImage& kernel, uint64_t mem_bytes, uint64_t initrd_size, size_t cmdline_len) {
  if (kernel.cmdline_size != 0 && cmdline_len > kernel.cmdline_size) {
    return make_error("the kernel command line is " + std::to_string(cmdline_len) + " bytes; this kernel accepts at most " +
                      std::to_string(kernel.cmdline_size));
  }
  if (cmdline_len >= kMpTableGpa - kCmdlineGpa) return make_error("the kernel command line is too long");
  BootPlan plan;
  plan.map = memory_map(mem_bytes);
  uint64_t kernel_end = kKernelRunGpa + kernel.init_size;
  // Keep 16 MiB above the kernel for its early allocations (page tables, decompression heap).
  uint64_t need = kernel_end + initrd_size + (16ull << 20);
  if (mem_bytes < kMinMemBytes || plan.map.low_bytes < need) {
    return make_error("--mem " + mib(mem_bytes) + " is too small for this kernel" +
                      (initrd_size ? std::string(" and initrd") : std::string()) + "; use at least " + mib(need));
  }
  plan.entry64 = kKernelGpa + 0x200;
  if (initrd_size) {
    uint64_t top = plan.map.low_bytes;
    if (kernel.initrd_addr_max && top > uint64_t{kernel.initrd_addr_max} + 1) top = uint64_t{kernel.initrd_addr_max} + 1;
    if (top < initrd_size) return make_error("the initrd does not fit below the kernel's initrd limit");
    plan.initrd_gpa = (top - initrd_size) & ~0xfffull;
    if (plan.initrd_gpa < kernel_end) return make_error("the initrd does not fit beside the kernel; use more --mem");
    plan.initrd_size = initrd_size;
  }
  plan.e820 = {
      {0, kMpTableGpa, 1},
      {kMpTableGpa, 0xa0000 - kMpTableGpa, 2},
      {0xf0000, 0x10000, 2},
      {kKernelGpa, plan.map.low_bytes - kKernelGpa, 1},
  };
  if (plan.map.high_bytes) plan.e820.push_back({kHighRamStart, plan.map.high_bytes, 1});
  return plan;
}

std::vector<uint8_t> build_boot_params(const BzImage& kernel, const BootPlan& plan) {
  std::vector<uint8_t> zp(4096, 0);
  std::memcpy(zp.data() + kSetupSects, kernel.setup_header.data(), kernel.setup_header.size());
  zp[kTypeOfLoader] = 0xff;  // "Undefined" boot loader.
  zp[kLoadFlags] |= kLoadedHigh;
  store<uint32_t>(zp, kCmdLinePtr, static_cast<uint32_t>(kCmdlineGpa));
  store<uint32_t>(zp, kExtCmdLinePtr, static_cast<uint32_t>(kCmdlineGpa >> 32));
  store<uint32_t>(zp, kRamdiskImage, static_cast<uint32_t>(plan.initrd_gpa));
  store<uint32_t>(zp, kExtRamdiskImage, static_cast<uint32_t>(plan.initrd_gpa >> 32));
  store<uint32_t>(zp, kRamdiskSize, static_cast<uint32_t>(plan.initrd_size));
  store<uint32_t>(zp, kExtRamdiskSize, static_cast<uint32_t>(plan.initrd_size >> 32));
  MOSS_ASSERT(plan.e820.size() <= kE820Max);
  zp[kE820Entries] = static_cast<uint8_t>(plan.e820.size());
  for (size_t i = 0; i < plan.e820.size(); i++) {
    size_t off = kE820Table + i * 20;
    store<uint64_t>(zp, off, plan.e820[i].addr);
    store<uint64_t>(zp, off + 8, plan.e820[i].size);
    store<uint32_t>(zp, off + 16, plan.e820[i].type);
  }
  return zp;
}

}  // namespace moss::boot
