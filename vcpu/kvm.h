// Thin RAII wrappers over the KVM ioctl API. Every failure is an Error naming the ioctl.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <span>
#include <vector>

#include "base/fd.h"
#include "base/result.h"
#include "vcpu/kvm_caps.h"

namespace moss {

// In C++, <linux/kvm.h>'s __DECLARE_FLEX_ARRAY puts an empty struct before the flexible
// array, so sizeof(kvm_cpuid2) and sizeof(kvm_msrs) differ from the kernel's C sizes and the
// _IOW numbers built from them are ones the kernel rejects (EINVAL). These use C's layout.
struct KvmCpuid2Header {
  uint32_t nent, padding;
};
struct KvmMsrsHeader {
  uint32_t nmsrs, pad;
};
static_assert(sizeof(KvmCpuid2Header) == 8 && sizeof(KvmMsrsHeader) == 8);
inline constexpr unsigned long kKvmGetSupportedCpuid = _IOWR(KVMIO, 0x05, KvmCpuid2Header);
inline constexpr unsigned long kKvmSetCpuid2 = _IOW(KVMIO, 0x90, KvmCpuid2Header);
inline constexpr unsigned long kKvmSetMsrs = _IOW(KVMIO, 0x89, KvmMsrsHeader);
struct KvmIrqRoutingHeader {
  uint32_t nr, flags;
};
inline constexpr unsigned long kKvmSetGsiRouting = _IOW(KVMIO, 0x6a, KvmIrqRoutingHeader);
struct KvmMsrListHeader {
  uint32_t nmsrs;
};
struct KvmXsaveRegion {
  uint32_t region[1024];
};
inline constexpr unsigned long kKvmGetMsrIndexList = _IOWR(KVMIO, 0x02, KvmMsrListHeader);
inline constexpr unsigned long kKvmGetMsrs = _IOWR(KVMIO, 0x88, KvmMsrsHeader);
inline constexpr unsigned long kKvmGetXsave = _IOR(KVMIO, 0xa4, KvmXsaveRegion);
inline constexpr unsigned long kKvmSetXsave = _IOW(KVMIO, 0xa5, KvmXsaveRegion);

inline constexpr unsigned long kKvmGetCpuid2 = _IOWR(KVMIO, 0x91, KvmCpuid2Header);
inline constexpr unsigned long kKvmGetXsave2 = _IOR(KVMIO, 0xcf, KvmXsaveRegion);

// The largest XSAVE area we accept (KVM_CAP_XSAVE2 reports the host's; AMX makes it ~11 KiB).
inline constexpr size_t kMaxXsaveBytes = 64 * 1024;
inline constexpr size_t kLegacyXsaveBytes = sizeof(KvmXsaveRegion);
inline constexpr uint32_t kMsrIa32Tsc = 0x10;
inline constexpr uint32_t kMsrIa32McgCtl = 0x17b;
inline constexpr uint32_t kMsrIa32TscDeadline = 0x6e0;

// Everything KVM holds for one vCPU, as the kernel's own structures (same host
// architecture on both ends of a save and restore).
struct VcpuState {
  std::vector<kvm_cpuid_entry2> cpuid;  // What the vCPU was given (KVM_GET_CPUID2).
  kvm_mp_state mp_state{};
  kvm_regs regs{};
  kvm_sregs sregs{};
  std::vector<uint8_t> xsave;  // struct kvm_xsave, KVM_CAP_XSAVE2's size (>= 4096).
  kvm_xcrs xcrs{};
  kvm_debugregs debugregs{};
  kvm_lapic_state lapic{};
  std::vector<kvm_msr_entry> msrs;
  kvm_vcpu_events events{};
  uint32_t tsc_khz = 0;  // KVM_GET_TSC_KHZ.
};

// The VM-wide state of the in-kernel devices and clock.
struct VmState {
  kvm_pit_state2 pit{};
  kvm_clock_data clock{};  // KVM_GET_CLOCK, flags as KVM returned them.
  kvm_irqchip pic_master{};
  kvm_irqchip pic_slave{};
  kvm_irqchip ioapic{};
};

// What the host's KVM offers for saving and restoring state, probed once at set-up.
struct KvmStateCaps {
  size_t xsave_bytes = kLegacyXsaveBytes;  // KVM_CAP_XSAVE2's size, or 4096 without it.
  bool xsave2 = false;                     // KVM_GET_XSAVE2 exists.
  bool tsc_control = false;                // KVM_CAP_TSC_CONTROL: KVM_SET_TSC_KHZ can scale.
  uint32_t host_tsc_khz = 0;               // A fresh vCPU's KVM_GET_TSC_KHZ.
  uint32_t clock_flags = 0;                // KVM_CAP_ADJUST_CLOCK: the KVM_CLOCK_* flags KVM knows.
};
Result<KvmStateCaps> kvm_state_caps(int vm_fd, int vcpu_fd);

// The ioctl layer state save and restore go through: a real fd, or a test's recorder, so the
// restore order is a tested fact (vcpu/kvm_state_test.cc). Returns ioctl(2)'s result, or -1
// with errno set.
class KvmIoctl {
 public:
  virtual ~KvmIoctl() = default;
  virtual int ioctl(unsigned long request, void* arg) = 0;
};
class FdKvmIoctl final : public KvmIoctl {
 public:
  explicit FdKvmIoctl(int fd) : fd_(fd) {}
  int ioctl(unsigned long request, void* arg) override;

 private:
  int fd_;
};

// One vCPU's state; only while it is outside KVM_RUN. `msr_indices`: what to save
// (kvm_saveable_msrs()).
Result<VcpuState> save_vcpu_state(KvmIoctl& vcpu, const KvmStateCaps& caps, const std::vector<uint32_t>& msr_indices);
// Restores one vCPU in the order KVM needs (the comments in kvm.cc say why each step is where
// it is). Refuses, before changing anything, a state whose TSC frequency this host cannot
// give the guest, or whose XSAVE area is larger than this host's.
Result<void> restore_vcpu_state(KvmIoctl& vcpu, const KvmStateCaps& caps, const VcpuState& s);
// Checks what restore_vcpu_state() would refuse without touching KVM.
Result<void> check_vcpu_state_fits(const KvmStateCaps& caps, const VcpuState& s);
Result<VmState> save_vm_state(KvmIoctl& vm);
// After every vCPU is restored. The guest's clock continues from the saved kvmclock value
// (its monotonic time does not jump over the suspension); with `realtime`, and when the
// saved clock carries KVM_CLOCK_REALTIME and this host's KVM knows it, KVM advances the
// clock by the wall time that passed since the save instead.
Result<void> restore_vm_state(KvmIoctl& vm, const KvmStateCaps& caps, const VmState& s, bool realtime);

// A whole machine: every vCPU's state is checked first (nothing changes if one would be
// refused), then each vCPU is restored, then the VM's irqchip, PIT and clock.
Result<void> restore_machine_state(const std::vector<KvmIoctl*>& vcpus, KvmIoctl& vm, const KvmStateCaps& caps,
                                   const std::vector<VcpuState>& cpus, const VmState& vm_state, bool realtime);

// The MSRs of `listed` (KVM_GET_MSR_INDEX_LIST) that `vcpu` can read, minus those never saved
// (see kvm.cc). Call once at set-up, after the vCPU got its CPUID.
Result<std::vector<uint32_t>> kvm_saveable_msrs(KvmIoctl& vcpu, const std::vector<uint32_t>& listed);

Result<std::vector<kvm_cpuid_entry2>> kvm_supported_cpuid(int kvm_fd);
// The MSRs KVM can save and restore (KVM_GET_MSR_INDEX_LIST).
Result<std::vector<uint32_t>> kvm_msr_index_list(int kvm_fd);

class KvmVcpu {
 public:
  KvmVcpu(UniqueFd fd, kvm_run* run, size_t run_size, uint32_t index)
      : fd_(std::move(fd)), run_(run), run_size_(run_size), index_(index) {}
  KvmVcpu(KvmVcpu&& o) noexcept;
  KvmVcpu& operator=(KvmVcpu&&) = delete;
  ~KvmVcpu();

  int fd() const { return fd_.get(); }
  kvm_run* run() const { return run_; }
  uint32_t index() const { return index_; }

  Result<void> set_cpuid(const std::vector<kvm_cpuid_entry2>& entries);
  Result<void> set_msrs(const std::vector<kvm_msr_entry>& msrs);
  Result<void> set_regs(const kvm_regs& regs);
  Result<kvm_sregs> get_sregs();
  Result<void> set_sregs(const kvm_sregs& sregs);
  Result<void> set_fpu(const kvm_fpu& fpu);
  // LINT0 = ExtINT and LINT1 = NMI, as firmware leaves them for a PC.
  Result<void> setup_lapic_lints();

 private:
  UniqueFd fd_;
  kvm_run* run_;
  size_t run_size_;
  uint32_t index_;
};

class KvmVm {
 public:
  static Result<KvmVm> create(int kvm_fd);

  int fd() const { return fd_.get(); }
  Result<void> set_memory(uint32_t slot, uint64_t gpa, uint64_t size, void* host);
  // The in-kernel IOAPIC, PIC pair and PIT, and the x86 TSS/identity-map pages they need.
  Result<void> create_platform();
  Result<KvmVcpu> create_vcpu(uint32_t index);
  Result<void> irq_line(uint32_t irq, bool level);

  // The whole GSI routing table: the default ISA/IOAPIC routes KVM_CREATE_IRQCHIP set up
  // (replacing the table drops them, so they are always included) plus one MSI route per
  // entry of `msi` (gsi, address, data).
  struct MsiRoute {
    uint32_t gsi;
    uint64_t address;
    uint32_t data;
  };
  Result<void> set_msi_routes(const std::vector<MsiRoute>& msi);
  // Raise `gsi` whenever `event_fd` is signalled (assign), or stop doing so.
  Result<void> irqfd(int event_fd, uint32_t gsi, bool assign);
  // Signal `event_fd` on any guest write to [gpa, gpa+len) instead of exiting; len 0 means
  // a write of any size at gpa (KVM_CAP_IOEVENTFD_ANY_LENGTH).
  Result<void> ioeventfd(int event_fd, uint64_t gpa, uint32_t len, bool assign);

 private:
  KvmVm(int kvm_fd, UniqueFd fd) : kvm_fd_(kvm_fd), fd_(std::move(fd)) {}
  int kvm_fd_;
  UniqueFd fd_;
};

// The KVM ioctls only the set-up needs (making the VM, its vCPUs, irqchip, PIT and memory
// slots, and the host's CPUID and MSR lists): forbidden by a second seccomp filter once the
// VM is set up (vcpu/main.cc, policies/vcpu.policy).
std::span<const uint64_t> kvm_setup_only_ioctls();

}  // namespace moss
