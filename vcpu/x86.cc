#include "vcpu/x86.h"

#include "vcpu/bzimage.h"

namespace moss::x86 {
namespace {

constexpr uint32_t kMsrSysenterCs = 0x174, kMsrSysenterEsp = 0x175, kMsrSysenterEip = 0x176;
constexpr uint32_t kMsrStar = 0xc0000081, kMsrLstar = 0xc0000082, kMsrCstar = 0xc0000083;
constexpr uint32_t kMsrSyscallMask = 0xc0000084, kMsrKernelGsBase = 0xc0000102;
constexpr uint32_t kMsrTsc = 0x10, kMsrMiscEnable = 0x1a0;
constexpr uint64_t kMiscEnableFastString = 1;

constexpr uint64_t kCr0Pe = 1, kCr0Et = 1 << 4, kCr0Pg = 1ull << 31;
constexpr uint64_t kCr4Pae = 1 << 5;
constexpr uint64_t kEferLme = 1 << 8, kEferLma = 1 << 10;

// GDT: null, null, 64-bit code (0x10), data (0x18), TSS (0x20) — the selectors the boot
// protocol names __BOOT_CS and __BOOT_DS.
constexpr uint64_t kGdt[] = {
    0,
    0,
    0x00af9b000000ffff,  // Code: present, DPL 0, execute/read, L=1, G=1.
    0x00cf93000000ffff,  // Data: present, DPL 0, read/write, D/B=1, G=1.
    0x00808b0000000fff,  // 32-bit busy TSS; VMX insists on a usable TR.
};

kvm_segment segment_from_gdt(uint16_t selector) {
  uint64_t d = kGdt[selector >> 3];
  kvm_segment s{};
  s.selector = selector;
  s.base = static_cast<uint64_t>(((d >> 16) & 0xffffff) | (((d >> 56) & 0xff) << 24));
  uint32_t limit = static_cast<uint32_t>((d & 0xffff) | (((d >> 48) & 0xf) << 16));
  s.g = (d >> 55) & 1;
  s.limit = s.g ? (limit << 12) | 0xfff : limit;
  s.type = (d >> 40) & 0xf;
  s.s = (d >> 44) & 1;
  s.dpl = (d >> 45) & 3;
  s.present = (d >> 47) & 1;
  s.avl = (d >> 52) & 1;
  s.l = (d >> 53) & 1;
  s.db = (d >> 54) & 1;
  return s;
}

}  // namespace

std::vector<kvm_cpuid_entry2> cpuid_for_vcpu(const std::vector<kvm_cpuid_entry2>& supported, uint32_t index,
                                             uint32_t count) {
  std::vector<kvm_cpuid_entry2> out = supported;
  for (auto& e : out) {
    switch (e.function) {
      case 1:
        // EBX: initial APIC id [31:24], logical processors [23:16], CLFLUSH line 8*8 bytes.
        e.ebx = (index << 24) | (count << 16) | (8 << 8);
        e.ecx |= 1u << 31;  // Running under a hypervisor.
        if (count > 1) e.edx |= 1u << 28;  // HTT: the count in EBX[23:16] is valid.
        break;
      case 0xb:
      case 0x1f:
        e.edx = index;  // x2APIC id, on every subleaf.
        break;
      default:
        break;
    }
  }
  return out;
}

std::vector<kvm_msr_entry> boot_msrs() {
  std::vector<kvm_msr_entry> m;
  for (uint32_t idx : {kMsrSysenterCs, kMsrSysenterEsp, kMsrSysenterEip, kMsrStar, kMsrLstar, kMsrCstar,
                       kMsrSyscallMask, kMsrKernelGsBase, kMsrTsc}) {
    m.push_back(kvm_msr_entry{idx, 0, 0});
  }
  m.push_back(kvm_msr_entry{kMsrMiscEnable, 0, kMiscEnableFastString});
  return m;
}

Result<void> write_long_mode_tables(const GuestMemory& mem) {
  for (size_t i = 0; i < std::size(kGdt); i++) MOSS_TRY_VOID(mem.write_obj(boot::kGdtGpa + i * 8, kGdt[i]));
  constexpr uint64_t kPdpt = boot::kPml4Gpa + 0x1000, kPd = boot::kPml4Gpa + 0x2000;
  constexpr uint64_t kPresentWrite = 0x3, kHuge = 0x80;
  MOSS_TRY_VOID(mem.write_obj<uint64_t>(boot::kPml4Gpa, kPdpt | kPresentWrite));
  for (uint64_t g = 0; g < 4; g++) {
    MOSS_TRY_VOID(mem.write_obj<uint64_t>(kPdpt + g * 8, (kPd + g * 0x1000) | kPresentWrite));
    for (uint64_t i = 0; i < 512; i++) {
      uint64_t addr = (g << 30) | (i << 21);
      MOSS_TRY_VOID(mem.write_obj<uint64_t>(kPd + g * 0x1000 + i * 8, addr | kPresentWrite | kHuge));
    }
  }
  return {};
}

Result<void> setup_boot_vcpu(KvmVcpu& vcpu, uint64_t entry, uint64_t boot_params) {
  MOSS_TRY(kvm_sregs s, vcpu.get_sregs());
  s.gdt.base = boot::kGdtGpa;
  s.gdt.limit = sizeof(kGdt) - 1;
  s.idt.base = 0;
  s.idt.limit = 0;
  s.cs = segment_from_gdt(0x10);
  s.ds = s.es = s.fs = s.gs = s.ss = segment_from_gdt(0x18);
  s.tr = segment_from_gdt(0x20);
  s.cr0 = kCr0Pe | kCr0Et | kCr0Pg;
  s.cr3 = boot::kPml4Gpa;
  s.cr4 = kCr4Pae;
  s.efer = kEferLme | kEferLma;
  MOSS_TRY_VOID(vcpu.set_sregs(s));

  kvm_regs r{};
  r.rip = entry;
  r.rsi = boot_params;
  r.rflags = 0x2;  // Reserved bit 1; interrupts off.
  MOSS_TRY_VOID(vcpu.set_regs(r));

  kvm_fpu fpu{};
  fpu.fcw = 0x37f;
  fpu.mxcsr = 0x1f80;
  MOSS_TRY_VOID(vcpu.set_fpu(fpu));
  return {};
}

}  // namespace moss::x86
