#include "vcpu/kvm.h"

#include <sys/ioctl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
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
    if (errno != E2BIG) return errno_error("ioctl(KVM_GET_SUPPORTED_CPUID) failed");
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
  MOSS_TRY_VOID(MOSS_SYS(ioctl(fd(), kKvmSetCpuid2, buf.data())));
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
  MOSS_TRY_VOID(MOSS_SYS(ioctl(fd(), KVM_SET_REGS, &regs)));
  return {};
}

Result<kvm_sregs> KvmVcpu::get_sregs() {
  kvm_sregs s;
  MOSS_TRY_VOID(MOSS_SYS(ioctl(fd(), KVM_GET_SREGS, &s)));
  return s;
}

Result<void> KvmVcpu::set_sregs(const kvm_sregs& sregs) {
  MOSS_TRY_VOID(MOSS_SYS(ioctl(fd(), KVM_SET_SREGS, &sregs)));
  return {};
}

Result<void> KvmVcpu::set_fpu(const kvm_fpu& fpu) {
  MOSS_TRY_VOID(MOSS_SYS(ioctl(fd(), KVM_SET_FPU, &fpu)));
  return {};
}

Result<void> KvmVcpu::setup_lapic_lints() {
  constexpr size_t kLvtLint0 = 0x350, kLvtLint1 = 0x360;
  constexpr uint32_t kDeliveryExtInt = 7 << 8, kDeliveryNmi = 4 << 8, kDeliveryMask = 7 << 8;
  kvm_lapic_state lapic;
  MOSS_TRY_VOID(MOSS_SYS(ioctl(fd(), KVM_GET_LAPIC, &lapic)));
  auto patch = [&](size_t off, uint32_t mode) {
    uint32_t v;
    std::memcpy(&v, lapic.regs + off, 4);
    v = (v & ~kDeliveryMask) | mode;
    std::memcpy(lapic.regs + off, &v, 4);
  };
  patch(kLvtLint0, kDeliveryExtInt);
  patch(kLvtLint1, kDeliveryNmi);
  MOSS_TRY_VOID(MOSS_SYS(ioctl(fd(), KVM_SET_LAPIC, &lapic)));
  return {};
}

Result<KvmVm> KvmVm::create(int kvm_fd) {
  MOSS_TRY_VOID(kvm_check_api(kvm_fd));
  MOSS_TRY(int fd, MOSS_SYS(ioctl(kvm_fd, KVM_CREATE_VM, 0)));
  return KvmVm(kvm_fd, UniqueFd(fd));
}

Result<void> KvmVm::set_memory(uint32_t slot, uint64_t gpa, uint64_t size, void* host) {
  kvm_userspace_memory_region r{};
  r.slot = slot;
  r.guest_phys_addr = gpa;
  r.memory_size = size;
  r.userspace_addr = reinterpret_cast<uint64_t>(host);
  MOSS_TRY_VOID(MOSS_SYS(ioctl(fd(), KVM_SET_USER_MEMORY_REGION, &r)));
  return {};
}

Result<void> KvmVm::create_platform() {
  // Three pages just below the BIOS area at 4 GiB - 256 KiB, inside the MMIO hole, for
  // Intel's real-mode TSS and identity map; unused on AMD.
  MOSS_TRY_VOID(MOSS_SYS(ioctl(fd(), KVM_SET_TSS_ADDR, 0xfffbd000ul)));
  uint64_t identity = 0xfffbc000;
  MOSS_TRY_VOID(MOSS_SYS(ioctl(fd(), KVM_SET_IDENTITY_MAP_ADDR, &identity)));
  MOSS_TRY_VOID(MOSS_SYS(ioctl(fd(), KVM_CREATE_IRQCHIP, 0)));
  kvm_pit_config pit{};
  pit.flags = KVM_PIT_SPEAKER_DUMMY;
  MOSS_TRY_VOID(MOSS_SYS(ioctl(fd(), KVM_CREATE_PIT2, &pit)));
  return {};
}

Result<KvmVcpu> KvmVm::create_vcpu(uint32_t index) {
  MOSS_TRY(int mmap_size, MOSS_SYS(ioctl(kvm_fd_, KVM_GET_VCPU_MMAP_SIZE, 0)));
  MOSS_TRY(int vfd, MOSS_SYS(ioctl(fd(), KVM_CREATE_VCPU, static_cast<unsigned long>(index))));
  UniqueFd owned(vfd);
  void* run = mmap(nullptr, static_cast<size_t>(mmap_size), PROT_READ | PROT_WRITE, MAP_SHARED, vfd, 0);
  if (run == MAP_FAILED) return errno_error("mmap of the vCPU run area failed");
  return KvmVcpu(std::move(owned), static_cast<kvm_run*>(run), static_cast<size_t>(mmap_size), index);
}

Result<void> KvmVm::irq_line(uint32_t irq, bool level) {
  kvm_irq_level l{};
  l.irq = irq;
  l.level = level ? 1 : 0;
  MOSS_TRY_VOID(MOSS_SYS(ioctl(fd(), KVM_IRQ_LINE, &l)));
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
  MOSS_TRY_VOID(MOSS_SYS(ioctl(fd(), kKvmSetGsiRouting, buf.data())));
  return {};
}

Result<void> KvmVm::irqfd(int event_fd, uint32_t gsi, bool assign) {
  kvm_irqfd r{};
  r.fd = static_cast<uint32_t>(event_fd);
  r.gsi = gsi;
  r.flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN;
  MOSS_TRY_VOID(MOSS_SYS(ioctl(fd(), KVM_IRQFD, &r)));
  return {};
}

Result<void> KvmVm::ioeventfd(int event_fd, uint64_t gpa, uint32_t len, bool assign) {
  kvm_ioeventfd r{};
  r.addr = gpa;
  r.len = len;
  r.fd = event_fd;
  r.flags = assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN;
  MOSS_TRY_VOID(MOSS_SYS(ioctl(fd(), KVM_IOEVENTFD, &r)));
  return {};
}

Result<std::vector<uint32_t>> kvm_msr_index_list(int kvm_fd) {
  KvmMsrListHeader probe{0};
  if (ioctl(kvm_fd, kKvmGetMsrIndexList, &probe) < 0 && errno != E2BIG) {
    return errno_error("KVM_GET_MSR_INDEX_LIST failed");
  }
  std::vector<uint32_t> buf(1 + probe.nmsrs);
  buf[0] = probe.nmsrs;
  MOSS_TRY_VOID(MOSS_SYS(ioctl(kvm_fd, kKvmGetMsrIndexList, buf.data())));
  return std::vector<uint32_t>(buf.begin() + 1, buf.begin() + 1 + buf[0]);
}

int FdKvmIoctl::ioctl(unsigned long request, void* arg) { return ::ioctl(fd_, request, arg); }

namespace {

// One state ioctl through `io`, retrying EINTR; an Error names the ioctl.
Result<int> kvm_io(KvmIoctl& io, const char* name, unsigned long request, void* arg) {
  for (;;) {
    int r = io.ioctl(request, arg);
    if (r >= 0) return r;
    if (errno == EINTR) continue;
    int e = errno;
    return errno_error_code(e, std::string(name) + " failed");
  }
}
#define KVM_IO(io, request, arg) kvm_io(io, #request, request, arg)

// KVM_GET_MSRS / KVM_SET_MSRS of `entries`; returns how many KVM processed (it stops at the
// first it cannot read or write). KVM takes fewer than MAX_IO_MSRS (256) per call (E2BIG
// otherwise), so longer lists go in batches.
Result<size_t> msrs_io(KvmIoctl& io, bool set, std::vector<kvm_msr_entry>& entries) {
  constexpr size_t kBatch = 255;
  size_t done = 0;
  while (done < entries.size()) {
    size_t count = std::min(kBatch, entries.size() - done);
    std::vector<uint8_t> buf(sizeof(KvmMsrsHeader) + count * sizeof(kvm_msr_entry));
    reinterpret_cast<KvmMsrsHeader*>(buf.data())->nmsrs = static_cast<uint32_t>(count);
    std::memcpy(buf.data() + sizeof(KvmMsrsHeader), entries.data() + done, count * sizeof(kvm_msr_entry));
    MOSS_TRY(int n, set ? kvm_io(io, "KVM_SET_MSRS", kKvmSetMsrs, buf.data()) : kvm_io(io, "KVM_GET_MSRS", kKvmGetMsrs, buf.data()));
    std::memcpy(entries.data() + done, buf.data() + sizeof(KvmMsrsHeader), count * sizeof(kvm_msr_entry));
    done += std::min(static_cast<size_t>(n), count);
    if (static_cast<size_t>(n) < count) break;
  }
  return done;
}

// KVM's own tolerance (module parameter tsc_tolerance_ppm, 250 by default): within it KVM
// runs the guest at the host's rate without scaling, and so do we.
constexpr uint64_t kTscTolerancePpm = 250;

bool tsc_within_tolerance(uint32_t saved_khz, uint32_t host_khz) {
  uint64_t diff = saved_khz > host_khz ? saved_khz - host_khz : host_khz - saved_khz;
  return diff * 1'000'000 <= static_cast<uint64_t>(host_khz) * kTscTolerancePpm;
}

// The CPUID the vCPU was given (KVM_GET_CPUID2); grows the buffer while KVM says E2BIG.
Result<std::vector<kvm_cpuid_entry2>> get_cpuid2(KvmIoctl& io) {
  for (uint32_t n = 64; n <= 4096; n *= 2) {
    std::vector<uint8_t> buf(sizeof(KvmCpuid2Header) + n * sizeof(kvm_cpuid_entry2));
    reinterpret_cast<KvmCpuid2Header*>(buf.data())->nent = n;
    auto r = kvm_io(io, "KVM_GET_CPUID2", kKvmGetCpuid2, buf.data());
    if (!r && r.error().err == E2BIG) continue;
    MOSS_TRY_VOID(r);
    std::vector<kvm_cpuid_entry2> out(std::min(n, reinterpret_cast<KvmCpuid2Header*>(buf.data())->nent));
    if (!out.empty()) std::memcpy(out.data(), buf.data() + sizeof(KvmCpuid2Header), out.size() * sizeof(kvm_cpuid_entry2));
    return out;
  }
  return make_error("KVM reports an implausible number of CPUID leaves for this vCPU");
}

// Whether two CPUID entries are the same leaf with the same values, apart from the bits KVM
// rewrites while the guest runs (kvm_update_cpuid_runtime): they mirror CR4.OSXSAVE and
// CR4.PKE, APIC_BASE's enable bit, MISC_ENABLE's MWAIT bit and XCR0 (the XSAVE sizes of leaf
// 0xd), all of which the restored registers and MSRs bring back. A Linux guest sets them all
// while it boots, so a saved vCPU shows them and a freshly set-up one does not.
bool same_cpuid(const kvm_cpuid_entry2& a, const kvm_cpuid_entry2& b) {
  if (a.function != b.function || a.index != b.index || a.flags != b.flags) return false;
  uint32_t ebx = ~0u, ecx = ~0u, edx = ~0u;
  if (a.function == 1) {
    ecx &= ~((1u << 27) | (1u << 3));  // OSXSAVE, MONITOR
    edx &= ~(1u << 9);                 // APIC
  } else if (a.function == 7 && a.index == 0) {
    ecx &= ~(1u << 4);                 // OSPKE
  } else if (a.function == 0xd && (a.index == 0 || a.index == 1)) {
    ebx = 0;                           // XSAVE area size for the XCR0 (and XSS) in force
  }
  return a.eax == b.eax && (a.ebx & ebx) == (b.ebx & ebx) && (a.ecx & ecx) == (b.ecx & ecx) &&
         (a.edx & edx) == (b.edx & edx);
}

}  // namespace

Result<KvmStateCaps> kvm_state_caps(int vm_fd, int vcpu_fd) {
  KvmStateCaps c;
  int xsave2 = kvm_check_extension(vm_fd, KVM_CAP_XSAVE2);
  c.xsave2 = xsave2 > 0;
  c.xsave_bytes = std::max<size_t>(kLegacyXsaveBytes, static_cast<size_t>(std::max(xsave2, 0)));
  if (c.xsave_bytes > kMaxXsaveBytes) {
    return make_error("this host's KVM reports an XSAVE area of " + std::to_string(c.xsave_bytes) + " bytes, more than moss supports");
  }
  c.tsc_control = kvm_check_extension(vm_fd, KVM_CAP_TSC_CONTROL) > 0;
  c.clock_flags = static_cast<uint32_t>(kvm_check_extension(vm_fd, KVM_CAP_ADJUST_CLOCK));
  if (kvm_check_extension(vm_fd, KVM_CAP_GET_TSC_KHZ) > 0) {
    MOSS_TRY(int khz, MOSS_SYS(::ioctl(vcpu_fd, KVM_GET_TSC_KHZ, 0)));
    c.host_tsc_khz = static_cast<uint32_t>(khz);
  }
  return c;
}

Result<std::vector<uint32_t>> kvm_saveable_msrs(KvmIoctl& vcpu, const std::vector<uint32_t>& listed) {
  std::vector<uint32_t> out;
  for (uint32_t index : listed) {
    // IA32_MCG_CTL exists only when the guest's IA32_MCG_CAP has MCG_CTL_P; KVM lists it
    // regardless and a write of the value read can fail on restore (Firecracker leaves it out
    // for the same reason). The guest's machine-check banks stay in their reset state.
    if (index == kMsrIa32McgCtl) continue;
    // KVM lists MSRs the host supports; some are not readable for this vCPU (its CPUID lacks
    // the feature): those hold no guest state.
    std::vector<kvm_msr_entry> one{kvm_msr_entry{index, 0, 0}};
    MOSS_TRY(size_t n, msrs_io(vcpu, false, one));
    if (n == 1) out.push_back(index);
  }
  return out;
}

Result<VcpuState> save_vcpu_state(KvmIoctl& io, const KvmStateCaps& caps, const std::vector<uint32_t>& msr_indices) {
  VcpuState s;
  MOSS_TRY(s.cpuid, get_cpuid2(io));
  // MP state first: KVM_GET_MP_STATE processes a pending INIT or SIPI (kvm_apic_accept_events),
  // which changes the registers and the LAPIC read after it.
  MOSS_TRY_VOID(KVM_IO(io, KVM_GET_MP_STATE, &s.mp_state));
  MOSS_TRY_VOID(KVM_IO(io, KVM_GET_REGS, &s.regs));
  MOSS_TRY_VOID(KVM_IO(io, KVM_GET_SREGS, &s.sregs));
  s.xsave.assign(caps.xsave_bytes, 0);
  if (caps.xsave2) MOSS_TRY_VOID(KVM_IO(io, kKvmGetXsave2, s.xsave.data()));
  else MOSS_TRY_VOID(KVM_IO(io, kKvmGetXsave, s.xsave.data()));
  MOSS_TRY_VOID(KVM_IO(io, KVM_GET_XCRS, &s.xcrs));
  MOSS_TRY_VOID(KVM_IO(io, KVM_GET_DEBUGREGS, &s.debugregs));
  MOSS_TRY_VOID(KVM_IO(io, KVM_GET_LAPIC, &s.lapic));
  std::vector<kvm_msr_entry> msrs;
  for (uint32_t index : msr_indices) msrs.push_back(kvm_msr_entry{index, 0, 0});
  MOSS_TRY(size_t n, msrs_io(io, false, msrs));
  if (n != msrs.size()) {
    // The list was probed at set-up: an MSR that could be read then and not now is a change
    // in KVM we must not paper over (the state would silently miss it).
    char text[96];
    std::snprintf(text, sizeof text, "KVM could not read MSR 0x%x of this vCPU, so its state cannot be saved",
                  msrs[n].index);
    return make_error(text);
  }
  s.msrs = std::move(msrs);
  MOSS_TRY_VOID(KVM_IO(io, KVM_GET_VCPU_EVENTS, &s.events));
  if (caps.host_tsc_khz == 0) {
    return make_error("this host's KVM cannot report the guest's TSC frequency (no KVM_CAP_GET_TSC_KHZ), so its state cannot be saved");
  }
  MOSS_TRY(int khz, KVM_IO(io, KVM_GET_TSC_KHZ, nullptr));
  s.tsc_khz = static_cast<uint32_t>(khz);
  return s;
}

Result<void> check_vcpu_state_fits(const KvmStateCaps& caps, const VcpuState& s) {
  if (s.xsave.size() > caps.xsave_bytes) {
    return make_error("the saved XSAVE area is " + std::to_string(s.xsave.size()) + " bytes and this host's KVM holds " +
                      std::to_string(caps.xsave_bytes) + ": it lacks CPU state the guest used");
  }
  if (!tsc_within_tolerance(s.tsc_khz, caps.host_tsc_khz) && !caps.tsc_control) {
    return make_error("the saved TSC frequency is " + std::to_string(s.tsc_khz) + " kHz and this host's is " +
                      std::to_string(caps.host_tsc_khz) + " kHz, which KVM cannot scale here (no KVM_CAP_TSC_CONTROL)");
  }
  return {};
}

// The restore order, and why each step is where it is:
//  1. CPUID first of all: KVM derives from it which XSAVE components, MSRs and LAPIC features
//     (x2APIC, TSC deadline) the vCPU has; state set before it is refused or dropped. KVM
//     takes a CPUID only before the vCPU's first KVM_RUN (a later KVM_SET_CPUID2 must be
//     identical), and moss-vcpu forbids KVM_SET_CPUID2 once set-up is done (vcpu.policy): so
//     the CPUID is set at set-up (a vCPU restored at start is given the saved one), and here
//     the vCPU's CPUID (KVM_GET_CPUID2) must equal the saved one apart from the bits KVM
//     rewrites at run time (same_cpuid), or the state is refused before anything changes.
//  2. The TSC frequency, before any TSC value is written: KVM scales the TSC MSR by it.
//  3. MP state, general and special registers, XSAVE, XCRs, debug registers. Special
//     registers before the LAPIC: KVM_SET_SREGS writes APIC_BASE, and a change of the APIC's
//     mode there resets the LAPIC.
//  4. LAPIC before MSRs: KVM_SET_LAPIC re-arms (and so first cancels) the LAPIC timer, which
//     would lose an IA32_TSC_DEADLINE written before it; the x2APIC MSRs live in the LAPIC too.
//  5. MSRs, IA32_TSC before IA32_TSC_DEADLINE: the deadline is a guest TSC value, and KVM
//     arms the timer against the TSC offset in force when the deadline is written. A zero
//     deadline is not written: KVM reads 0 once a deadline has fired or while the timer is in
//     another mode, and writing 0 disarms the timer KVM_SET_LAPIC just re-armed.
//  6. vCPU events after the registers: KVM_SET_REGS and KVM_SET_SREGS drop a pending
//     exception and queue the interrupt bitmap; the events put back what was pending.
Result<void> restore_vcpu_state(KvmIoctl& io, const KvmStateCaps& caps, const VcpuState& s) {
  MOSS_TRY_VOID(check_vcpu_state_fits(caps, s));
  {
    MOSS_TRY(auto now, get_cpuid2(io));
    bool same = now.size() == s.cpuid.size();
    for (size_t i = 0; same && i < now.size(); i++) same = same_cpuid(now[i], s.cpuid[i]);
    if (!same) {
      return make_error("the saved CPUID differs from the one this VM's vCPUs were set up with (a state from another "
                        "host or machine configuration)");
    }
  }
  if (!tsc_within_tolerance(s.tsc_khz, caps.host_tsc_khz)) {
    auto r = kvm_io(io, "KVM_SET_TSC_KHZ", KVM_SET_TSC_KHZ, reinterpret_cast<void*>(static_cast<uintptr_t>(s.tsc_khz)));
    if (!r) {
      return make_error("KVM cannot run this guest's TSC at the saved " + std::to_string(s.tsc_khz) + " kHz (host " +
                        std::to_string(caps.host_tsc_khz) + " kHz): " + r.error().message);
    }
  }
  kvm_mp_state mp = s.mp_state;
  kvm_regs regs = s.regs;
  kvm_sregs sregs = s.sregs;
  kvm_xcrs xcrs = s.xcrs;
  kvm_debugregs debugregs = s.debugregs;
  kvm_lapic_state lapic = s.lapic;
  kvm_vcpu_events events = s.events;
  MOSS_TRY_VOID(KVM_IO(io, KVM_SET_MP_STATE, &mp));
  MOSS_TRY_VOID(KVM_IO(io, KVM_SET_REGS, &regs));
  MOSS_TRY_VOID(KVM_IO(io, KVM_SET_SREGS, &sregs));
  // KVM_SET_XSAVE reads as many bytes as this host's area holds; a smaller saved area (from a
  // host without some component) leaves the rest in its initial state (zeros).
  std::vector<uint8_t> xsave(caps.xsave_bytes, 0);
  std::memcpy(xsave.data(), s.xsave.data(), s.xsave.size());
  MOSS_TRY_VOID(KVM_IO(io, kKvmSetXsave, xsave.data()));
  MOSS_TRY_VOID(KVM_IO(io, KVM_SET_XCRS, &xcrs));
  MOSS_TRY_VOID(KVM_IO(io, KVM_SET_DEBUGREGS, &debugregs));
  MOSS_TRY_VOID(KVM_IO(io, KVM_SET_LAPIC, &lapic));
  std::vector<kvm_msr_entry> msrs, deadline;
  for (const auto& e : s.msrs) {
    if (e.index == kMsrIa32TscDeadline) {
      if (e.data != 0) deadline.push_back(e);
    } else if (e.index == kMsrIa32Tsc) {
      msrs.insert(msrs.begin(), e);
    } else {
      msrs.push_back(e);
    }
  }
  msrs.insert(msrs.end(), deadline.begin(), deadline.end());
  MOSS_TRY(size_t n, msrs_io(io, true, msrs));
  if (n != msrs.size()) {
    char text[64];
    std::snprintf(text, sizeof text, "KVM refused the saved MSR 0x%x", msrs[n].index);
    return make_error(text);
  }
  MOSS_TRY_VOID(KVM_IO(io, KVM_SET_VCPU_EVENTS, &events));
  return {};
}

Result<VmState> save_vm_state(KvmIoctl& io) {
  VmState s;
  MOSS_TRY_VOID(KVM_IO(io, KVM_GET_PIT2, &s.pit));
  s.pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
  s.pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
  s.ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
  MOSS_TRY_VOID(KVM_IO(io, KVM_GET_IRQCHIP, &s.pic_master));
  MOSS_TRY_VOID(KVM_IO(io, KVM_GET_IRQCHIP, &s.pic_slave));
  MOSS_TRY_VOID(KVM_IO(io, KVM_GET_IRQCHIP, &s.ioapic));
  MOSS_TRY_VOID(KVM_IO(io, KVM_GET_CLOCK, &s.clock));
  return s;
}

namespace {
Result<void> check_clock_restorable(const KvmStateCaps& caps, const VmState& s, bool realtime) {
  if (realtime && !((s.clock.flags & KVM_CLOCK_REALTIME) && (caps.clock_flags & KVM_CLOCK_REALTIME))) {
    return make_error(std::string("the guest's clock cannot be stepped to real time: ") +
                      ((s.clock.flags & KVM_CLOCK_REALTIME) ? "this host's KVM lacks KVM_CLOCK_REALTIME"
                                                            : "the saved clock holds no wall-clock time (KVM_CLOCK_REALTIME)"));
  }
  return {};
}
}  // namespace

// After the vCPUs: restoring the PIC and IOAPIC re-evaluates their pending lines and can
// deliver an interrupt to a LAPIC, which KVM_SET_LAPIC would otherwise wipe. The clock last:
// KVM_SET_CLOCK computes the kvmclock offset from the TSCs as they are now, and a TSC write
// after it would shift the guest's clock again.
Result<void> restore_vm_state(KvmIoctl& io, const KvmStateCaps& caps, const VmState& s, bool realtime) {
  MOSS_TRY_VOID(check_clock_restorable(caps, s, realtime));
  kvm_pit_state2 pit = s.pit;
  kvm_irqchip master = s.pic_master, slave = s.pic_slave, ioapic = s.ioapic;
  MOSS_TRY_VOID(KVM_IO(io, KVM_SET_PIT2, &pit));
  MOSS_TRY_VOID(KVM_IO(io, KVM_SET_IRQCHIP, &master));
  MOSS_TRY_VOID(KVM_IO(io, KVM_SET_IRQCHIP, &slave));
  MOSS_TRY_VOID(KVM_IO(io, KVM_SET_IRQCHIP, &ioapic));
  // Without KVM_CLOCK_REALTIME the guest's kvmclock continues from the saved value: its
  // monotonic time does not see the suspension. KVM takes only that flag on a set.
  kvm_clock_data clock{};
  clock.clock = s.clock.clock;
  if (realtime) {
    clock.flags = KVM_CLOCK_REALTIME;
    clock.realtime = s.clock.realtime;
  }
  MOSS_TRY_VOID(KVM_IO(io, KVM_SET_CLOCK, &clock));
  return {};
}

Result<void> restore_machine_state(const std::vector<KvmIoctl*>& vcpus, KvmIoctl& vm, const KvmStateCaps& caps,
                                   const std::vector<VcpuState>& cpus, const VmState& vm_state, bool realtime) {
  if (cpus.size() != vcpus.size()) {
    return make_error("the saved state has " + std::to_string(cpus.size()) + " vCPUs and this VM " + std::to_string(vcpus.size()));
  }
  for (const auto& s : cpus) MOSS_TRY_VOID(check_vcpu_state_fits(caps, s));
  MOSS_TRY_VOID(check_clock_restorable(caps, vm_state, realtime));
  for (size_t i = 0; i < cpus.size(); i++) {
    auto r = restore_vcpu_state(*vcpus[i], caps, cpus[i]);
    if (!r) return make_error("vCPU " + std::to_string(i) + ": " + r.error().message, r.error().err);
  }
  return restore_vm_state(vm, caps, vm_state, realtime);
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
