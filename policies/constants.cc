// The named constants policies may use, taken from the system headers moss is built with so
// that a policy never carries a number that disagrees with the code it filters.
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/kvm.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include <cctype>
#include <cstring>
#include <string>

#include "policies/policy.h"

namespace moss::policy {
namespace {

struct Named {
  const char* name;
  uint64_t value;
};

#define C(x) {#x, static_cast<uint64_t>(x)}

// KVM ioctls whose argument structs end in a flexible array: their numbers encode the size of
// the fixed header (8 bytes), as the kernel defines them. Spelled out so that C++ never has to
// take sizeof of a struct with a flexible array member.
constexpr uint64_t kKvmGetSupportedCpuid = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x05, 8);
constexpr uint64_t kKvmGetMsrIndexList = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x02, 4);
constexpr uint64_t kKvmSetCpuid2 = _IOC(_IOC_WRITE, KVMIO, 0x90, 8);
constexpr uint64_t kKvmGetMsrs = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x88, 8);
constexpr uint64_t kKvmSetMsrs = _IOC(_IOC_WRITE, KVMIO, 0x89, 8);
constexpr uint64_t kKvmSetGsiRouting = _IOC(_IOC_WRITE, KVMIO, 0x6a, 8);
constexpr uint64_t kKvmGetCpuid2 = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x91, 8);
// struct kvm_xsave: its fixed part is 4096 bytes (the flexible tail adds nothing to sizeof).
constexpr uint64_t kKvmGetXsave2 = _IOC(_IOC_READ, KVMIO, 0xcf, 4096);
// struct kvm_xsave's C++ sizeof is 4100 with newer headers (its flexible extra[] array); the
// kernel's and moss-vcpu's number (vcpu/kvm.h kKvmSetXsave) encode the 4096-byte region.
constexpr uint64_t kKvmGetXsave = _IOC(_IOC_READ, KVMIO, 0xa4, 4096);
constexpr uint64_t kKvmSetXsave = _IOC(_IOC_WRITE, KVMIO, 0xa5, 4096);

const Named kConstants[] = {
    // mmap / mprotect
    C(PROT_NONE), C(PROT_READ), C(PROT_WRITE), C(PROT_EXEC), C(MAP_SHARED), C(MAP_PRIVATE), C(MAP_ANONYMOUS),
    C(MAP_FIXED), C(MAP_NORESERVE), C(MAP_POPULATE),
    // socket families and options
    C(AF_UNIX), C(AF_INET), C(AF_INET6), C(AF_NETLINK), C(AF_VSOCK), C(SOL_SOCKET), C(SO_RCVTIMEO), C(SO_SNDTIMEO),
    C(SO_SNDBUF), C(SO_RCVBUF), C(SO_PEERCRED), C(SO_TYPE), C(SO_ERROR),
    // socket types and their flags
    C(SOCK_STREAM), C(SOCK_DGRAM), C(SOCK_SEQPACKET), C(SOCK_NONBLOCK), C(SOCK_CLOEXEC),
    // clone flags
    C(CLONE_VM), C(CLONE_FS), C(CLONE_FILES), C(CLONE_SIGHAND), C(CLONE_THREAD), C(CLONE_SYSVSEM), C(CLONE_SETTLS),
    C(CLONE_PARENT_SETTID), C(CLONE_CHILD_CLEARTID), C(CLONE_NEWNS), C(CLONE_NEWUSER), C(CLONE_NEWPID),
    C(CLONE_NEWNET), C(CLONE_NEWIPC), C(CLONE_NEWUTS), C(CLONE_NEWCGROUP), C(CLONE_VFORK), C(CLONE_PARENT),
    C(CLONE_PTRACE), C(CLONE_UNTRACED), C(CLONE_IO),
    // fcntl commands
    C(F_GETFD), C(F_SETFD), C(F_GETFL), C(F_SETFL), C(F_DUPFD), C(F_DUPFD_CLOEXEC), C(F_ADD_SEALS), C(F_GET_SEALS),
    // prctl options
    C(PR_SET_NAME), C(PR_GET_NAME), C(PR_SET_PDEATHSIG), C(PR_GET_PDEATHSIG), C(PR_SET_VMA), C(PR_GET_DUMPABLE),
    C(PR_SET_DUMPABLE), C(PR_GET_NO_NEW_PRIVS),
    // seccomp(2): the vcpu process stacks one more filter once its KVM set-up is done
    C(SECCOMP_SET_MODE_FILTER), C(SECCOMP_FILTER_FLAG_TSYNC),
    // block devices
    C(BLKSSZGET), C(BLKGETSIZE64), C(BLKPBSZGET), C(BLKIOOPT), C(BLKDISCARD), C(BLKZEROOUT),
    // KVM, system fd
    C(KVM_GET_API_VERSION), C(KVM_CREATE_VM), C(KVM_CHECK_EXTENSION), C(KVM_GET_VCPU_MMAP_SIZE),
    {"KVM_GET_SUPPORTED_CPUID", kKvmGetSupportedCpuid}, {"KVM_GET_MSR_INDEX_LIST", kKvmGetMsrIndexList},
    // KVM, VM fd
    C(KVM_CREATE_VCPU), C(KVM_SET_USER_MEMORY_REGION), C(KVM_SET_TSS_ADDR), C(KVM_SET_IDENTITY_MAP_ADDR),
    C(KVM_CREATE_IRQCHIP), C(KVM_CREATE_PIT2), C(KVM_IRQ_LINE), C(KVM_IRQ_LINE_STATUS), C(KVM_IRQFD),
    C(KVM_IOEVENTFD), C(KVM_SIGNAL_MSI), C(KVM_GET_IRQCHIP), C(KVM_SET_IRQCHIP), C(KVM_GET_PIT2), C(KVM_SET_PIT2),
    C(KVM_GET_CLOCK), C(KVM_SET_CLOCK), C(KVM_GET_DIRTY_LOG), C(KVM_ENABLE_CAP),
    {"KVM_SET_GSI_ROUTING", kKvmSetGsiRouting},
    // KVM, vCPU fd
    C(KVM_RUN), C(KVM_GET_REGS), C(KVM_SET_REGS), C(KVM_GET_SREGS), C(KVM_SET_SREGS), C(KVM_GET_FPU),
    C(KVM_SET_FPU), C(KVM_GET_LAPIC), C(KVM_SET_LAPIC), C(KVM_GET_MP_STATE), C(KVM_SET_MP_STATE),
    C(KVM_GET_VCPU_EVENTS), C(KVM_SET_VCPU_EVENTS), {"KVM_GET_XSAVE", kKvmGetXsave}, {"KVM_SET_XSAVE", kKvmSetXsave}, C(KVM_GET_XCRS),
    C(KVM_SET_XCRS), C(KVM_GET_DEBUGREGS), C(KVM_SET_DEBUGREGS), C(KVM_KVMCLOCK_CTRL), C(KVM_GET_TSC_KHZ),
    C(KVM_SET_TSC_KHZ), {"KVM_SET_CPUID2", kKvmSetCpuid2}, {"KVM_GET_MSRS", kKvmGetMsrs},
    {"KVM_SET_MSRS", kKvmSetMsrs},
    {"KVM_GET_CPUID2", kKvmGetCpuid2}, {"KVM_GET_XSAVE2", kKvmGetXsave2},
};

const Named kErrnos[] = {
    C(EPERM), C(ENOENT), C(EACCES), C(ENOSYS), C(EINVAL), C(EAGAIN), C(ENOMEM), C(EOPNOTSUPP), C(ENOTTY),
};

#undef C

}  // namespace

std::optional<uint64_t> constant(std::string_view name) {
  for (const auto& c : kConstants) {
    if (name == c.name) return c.value;
  }
  return std::nullopt;
}

std::optional<int> errno_value(std::string_view name) {
  for (const auto& c : kErrnos) {
    if (name == c.name) return static_cast<int>(c.value);
  }
  return std::nullopt;
}

std::vector<std::pair<std::string, uint64_t>> constants_in(std::string_view text) {
  std::vector<std::pair<std::string, uint64_t>> out;
  size_t i = 0;
  while (i < text.size()) {
    if (std::isalpha(static_cast<unsigned char>(text[i])) || text[i] == '_') {
      size_t j = i;
      while (j < text.size() && (std::isalnum(static_cast<unsigned char>(text[j])) || text[j] == '_')) j++;
      auto name = text.substr(i, j - i);
      if (auto v = constant(name)) out.emplace_back(std::string(name), *v);
      i = j;
    } else {
      i++;
    }
  }
  return out;
}

}  // namespace moss::policy
