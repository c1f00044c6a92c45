#include "vcpu/kvm.h"

#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cstring>

#include "base/syscall.h"

namespace moss {

Result<std::vector<kvm_cpuid_entry2>> kvm_supported_cpuid(int kvm_fd) {
  for (uint32_t n = 64; n <= 4096; n *= 2) {
    std::vector<uint8_t> buf(sizeof(KvmCpuid2Header) + n * sizeof(kvm_cpuid_entry2));
    auto* hdr = reinterpret_cast<KvmCpuid2Header*>(buf.data());
    hdr->nent = n;
    if (ioctl(kvm_fd, kKvmGetSupportedCpuid, buf.data()) == 0) {
      std::vector<kvm_cpuid_entry2> out(hdr->nent);
      std::memcpy(out.data(), buf.data() + sizeof(KvmCpuid2Header), out.size() * sizeof(kvm_cpuid_entry2));
      return out;
    }
    if (errno != E2BIG) return make_error(std::string("ioctl(KVM_GET_SUPPORTED_CPUID) failed: ") + strerror(errno), errno);
  }
  return make_error("KVM reports an implausible number of CPUID leaves");
}

KvmVcpu::KvmVcpu(KvmVcpu&& o) noexcept
    : fd_(std::move(o.fd_)), run_(std::exchange(o.run_, nullptr)), run_size_(o.run_size_), index_(o.index_) {}

KvmVcpu::~KvmVcpu() {
  if (run_) munmap(run_, run_size_);
}

Result<void> KvmVcpu::set_cpuid(const std::vector<kvm_cpuid_entry2>& entries) {
  std::vector<uint8_t> buf(sizeof(KvmCpuid2Header) + entries.size() * sizeof(kvm_cpuid_entry2));
  reinterpret_cast<KvmCpuid2Header*>(buf.data())->nent = static_cast<uint32_t>(entries.size());
  std::memcpy(buf.data() + sizeof(KvmCpuid2Header), entries.data(), entries.size() * sizeof(kvm_cpuid_entry2));
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), kKvmSetCpuid2, buf.data())));
  return {};
}

Result<void> KvmVcpu::set_msrs(const std::vector<kvm_msr_entry>& msrs) {
  std::vector<uint8_t> buf(sizeof(KvmMsrsHeader) + msrs.size() * sizeof(kvm_msr_entry));
  reinterpret_cast<KvmMsrsHeader*>(buf.data())->nmsrs = static_cast<uint32_t>(msrs.size());
  std::memcpy(buf.data() + sizeof(KvmMsrsHeader), msrs.data(), msrs.size() * sizeof(kvm_msr_entry));
  MOSS_TRY(int n, MOSS_SYS(ioctl(fd(), kKvmSetMsrs, buf.data())));
  if (static_cast<size_t>(n) != msrs.size()) {
    char text[64];
    std::snprintf(text, sizeof text, "KVM refused MSR 0x%x", msrs[static_cast<size_t>(n)].index);
    return make_error(text);
  }
  return {};
}

Result<void> KvmVcpu::set_regs(const kvm_regs& regs) {
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_SET_REGS, &regs)));
  return {};
}

Result<kvm_sregs> KvmVcpu::get_sregs() {
  kvm_sregs s;
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_GET_SREGS, &s)));
  return s;
}

Result<void> KvmVcpu::set_sregs(const kvm_sregs& sregs) {
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_SET_SREGS, &sregs)));
  return {};
}

Result<void> KvmVcpu::set_fpu(const kvm_fpu& fpu) {
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_SET_FPU, &fpu)));
  return {};
}

Result<void> KvmVcpu::setup_lapic_lints() {
  constexpr size_t kLvtLint0 = 0x350, kLvtLint1 = 0x360;
  constexpr uint32_t kDeliveryExtInt = 7 << 8, kDeliveryNmi = 4 << 8, kDeliveryMask = 7 << 8;
  kvm_lapic_state lapic;
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_GET_LAPIC, &lapic)));
  auto patch = [&](size_t off, uint32_t mode) {
    uint32_t v;
    std::memcpy(&v, lapic.regs + off, 4);
    v = (v & ~kDeliveryMask) | mode;
    std::memcpy(lapic.regs + off, &v, 4);
  };
  patch(kLvtLint0, kDeliveryExtInt);
  patch(kLvtLint1, kDeliveryNmi);
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_SET_LAPIC, &lapic)));
  return {};
}

Result<KvmVm> KvmVm::create(int kvm_fd) {
  MOSS_CHECK(kvm_check_api(kvm_fd));
  MOSS_TRY(int fd, MOSS_SYS(ioctl(kvm_fd, KVM_CREATE_VM, 0)));
  return KvmVm(kvm_fd, UniqueFd(fd));
}

Result<void> KvmVm::set_memory(uint32_t slot, uint64_t gpa, uint64_t size, void* host) {
  kvm_userspace_memory_region r{};
  r.slot = slot;
  r.guest_phys_addr = gpa;
  r.memory_size = size;
  r.userspace_addr = reinterpret_cast<uint64_t>(host);
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_SET_USER_MEMORY_REGION, &r)));
  return {};
}

Result<void> KvmVm::create_platform() {
  // Three pages just below the BIOS area at 4 GiB - 256 KiB, inside the MMIO hole, for
  // Intel's real-mode TSS and identity map; unused on AMD.
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_SET_TSS_ADDR, 0xfffbd000ul)));
  uint64_t identity = 0xfffbc000;
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_SET_IDENTITY_MAP_ADDR, &identity)));
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_CREATE_IRQCHIP, 0)));
  kvm_pit_config pit{};
  pit.flags = KVM_PIT_SPEAKER_DUMMY;
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_CREATE_PIT2, &pit)));
  return {};
}

Result<KvmVcpu> KvmVm::create_vcpu(uint32_t index) {
  MOSS_TRY(int mmap_size, MOSS_SYS(ioctl(kvm_fd_, KVM_GET_VCPU_MMAP_SIZE, 0)));
  MOSS_TRY(int vfd, MOSS_SYS(ioctl(fd(), KVM_CREATE_VCPU, static_cast<unsigned long>(index))));
  UniqueFd owned(vfd);
  void* run = mmap(nullptr, static_cast<size_t>(mmap_size), PROT_READ | PROT_WRITE, MAP_SHARED, vfd, 0);
  if (run == MAP_FAILED) return make_error(std::string("mmap of the vCPU run area failed: ") + strerror(errno), errno);
  return KvmVcpu(std::move(owned), static_cast<kvm_run*>(run), static_cast<size_t>(mmap_size), index);
}

Result<void> KvmVm::irq_line(uint32_t irq, bool level) {
  kvm_irq_level l{};
  l.irq = irq;
  l.level = level ? 1 : 0;
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_IRQ_LINE, &l)));
  return {};
}

Result<void> KvmVm::set_msi_routes(const std::vector<MsiRoute>& msi) {
  // KVM's own default table (kvm_setup_default_irq_routing): GSIs 0-15 go to both 8259s and
  // the IOAPIC, 16-23 to the IOAPIC only.
  std::vector<kvm_irq_routing_entry> entries;
  for (uint32_t gsi = 0; gsi < 24; gsi++) {
    if (gsi < 16) {
      kvm_irq_routing_entry pic{};
      pic.gsi = gsi;
      pic.type = KVM_IRQ_ROUTING_IRQCHIP;
      pic.u.irqchip.irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
      pic.u.irqchip.pin = gsi % 8;
      entries.push_back(pic);
    }
    kvm_irq_routing_entry io{};
    io.gsi = gsi;
    io.type = KVM_IRQ_ROUTING_IRQCHIP;
    io.u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
    io.u.irqchip.pin = gsi;
    entries.push_back(io);
  }
  for (const auto& m : msi) {
    MOSS_ASSERT(m.gsi >= 24);
    kvm_irq_routing_entry e{};
    e.gsi = m.gsi;
    e.type = KVM_IRQ_ROUTING_MSI;
    e.u.msi.address_lo = static_cast<uint32_t>(m.address);
    e.u.msi.address_hi = static_cast<uint32_t>(m.address >> 32);
    e.u.msi.data = m.data;
    entries.push_back(e);
  }
  // struct kvm_irq_routing ends in a flexible array: build it in a byte buffer. Its header
  // (nr, flags) is 8 bytes in C and C++ alike; the ioctl number uses that size.
  std::vector<uint8_t> buf(8 + entries.size() * sizeof(kvm_irq_routing_entry));
  uint32_t header[2] = {static_cast<uint32_t>(entries.size()), 0};
  std::memcpy(buf.data(), header, sizeof header);
  std::memcpy(buf.data() + 8, entries.data(), entries.size() * sizeof(kvm_irq_routing_entry));
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), kKvmSetGsiRouting, buf.data())));
  return {};
}

Result<void> KvmVm::irqfd(int event_fd, uint32_t gsi, bool assign) {
  kvm_irqfd r{};
  r.fd = static_cast<uint32_t>(event_fd);
  r.gsi = gsi;
  r.flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN;
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_IRQFD, &r)));
  return {};
}

Result<void> KvmVm::ioeventfd(int event_fd, uint64_t gpa, uint32_t len, bool assign) {
  kvm_ioeventfd r{};
  r.addr = gpa;
  r.len = len;
  r.fd = event_fd;
  r.flags = assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN;
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_IOEVENTFD, &r)));
  return {};
}

Result<std::vector<uint32_t>> kvm_msr_index_list(int kvm_fd) {
  KvmMsrListHeader probe{0};
  if (ioctl(kvm_fd, kKvmGetMsrIndexList, &probe) < 0 && errno != E2BIG) {
    return make_error(std::string("KVM_GET_MSR_INDEX_LIST failed: ") + strerror(errno), errno);
  }
  std::vector<uint32_t> buf(1 + probe.nmsrs);
  buf[0] = probe.nmsrs;
  MOSS_CHECK(MOSS_SYS(ioctl(kvm_fd, kKvmGetMsrIndexList, buf.data())));
  return std::vector<uint32_t>(buf.begin() + 1, buf.begin() + 1 + buf[0]);
}

Result<VcpuState> KvmVcpu::save_state(const std::vector<uint32_t>& msr_indices) {
  VcpuState s;
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_GET_REGS, &s.regs)));
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_GET_SREGS, &s.sregs)));
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), kKvmGetXsave, &s.xsave)));
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_GET_XCRS, &s.xcrs)));
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_GET_LAPIC, &s.lapic)));
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_GET_MP_STATE, &s.mp_state)));
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_GET_VCPU_EVENTS, &s.events)));
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_GET_DEBUGREGS, &s.debugregs)));
  // KVM_GET_MSRS stops at the first MSR it cannot read; leave that one out and go on.
  std::vector<uint32_t> want = msr_indices;
  for (;;) {
    std::vector<uint8_t> buf(sizeof(KvmMsrsHeader) + want.size() * sizeof(kvm_msr_entry));
    reinterpret_cast<KvmMsrsHeader*>(buf.data())->nmsrs = static_cast<uint32_t>(want.size());
    auto* entries = reinterpret_cast<kvm_msr_entry*>(buf.data() + sizeof(KvmMsrsHeader));
    for (size_t i = 0; i < want.size(); i++) entries[i] = kvm_msr_entry{want[i], 0, 0};
    MOSS_TRY(int n, MOSS_SYS(ioctl(fd(), kKvmGetMsrs, buf.data())));
    s.msrs.insert(s.msrs.end(), entries, entries + n);
    if (static_cast<size_t>(n) >= want.size()) break;
    want.erase(want.begin(), want.begin() + n + 1);
  }
  return s;
}

Result<void> KvmVcpu::restore_state(const VcpuState& s) {
  // Special registers first (modes and control registers), then the rest; the LAPIC before
  // the events that may name a pending interrupt; MP state last of all.
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_SET_SREGS, &s.sregs)));
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_SET_REGS, &s.regs)));
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), kKvmSetXsave, &s.xsave)));
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_SET_XCRS, &s.xcrs)));
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_SET_LAPIC, &s.lapic)));
  MOSS_CHECK(set_msrs(s.msrs));
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_SET_VCPU_EVENTS, &s.events)));
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_SET_DEBUGREGS, &s.debugregs)));
  MOSS_CHECK(MOSS_SYS(ioctl(fd(), KVM_SET_MP_STATE, &s.mp_state)));
  return {};
}

std::span<const uint64_t> kvm_setup_only_ioctls() {
  static const uint64_t kSetupOnly[] = {
      KVM_CREATE_VM,         KVM_CREATE_VCPU,         KVM_CREATE_IRQCHIP,         KVM_CREATE_PIT2,
      KVM_SET_TSS_ADDR,      KVM_SET_IDENTITY_MAP_ADDR, KVM_SET_USER_MEMORY_REGION, KVM_GET_SUPPORTED_CPUID,
      KVM_GET_MSR_INDEX_LIST, KVM_GET_VCPU_MMAP_SIZE,  KVM_GET_API_VERSION,        KVM_SET_CPUID2,
  };
  return kSetupOnly;
}

}  // namespace moss
