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

// Everything KVM holds for one vCPU, as the kernel's own structures (same host
// architecture on both ends of a save and restore).
struct VcpuState {
  kvm_regs regs{};
  kvm_sregs sregs{};
  KvmXsaveRegion xsave{};
  kvm_xcrs xcrs{};
  kvm_lapic_state lapic{};
  std::vector<kvm_msr_entry> msrs;
  kvm_mp_state mp_state{};
  kvm_vcpu_events events{};
  kvm_debugregs debugregs{};
};

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
  // Only while the vCPU is outside KVM_RUN. `msr_indices`: what to save (MSRs KVM lists but
  // cannot read for this vCPU are left out).
  Result<VcpuState> save_state(const std::vector<uint32_t>& msr_indices);
  Result<void> restore_state(const VcpuState& state);

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
