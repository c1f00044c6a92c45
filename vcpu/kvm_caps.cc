#include "vcpu/kvm_caps.h"

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <string>

#include "base/syscall.h"

namespace moss {

Result<void> kvm_check_api(int kvm_fd) {
  MOSS_TRY(int version, MOSS_SYS(ioctl(kvm_fd, KVM_GET_API_VERSION, 0)));
  if (version != KVM_API_VERSION) {
    return make_error("this kernel's KVM API version is " + std::to_string(version) + ", moss needs " +
                      std::to_string(KVM_API_VERSION));
  }
  return {};
}

int kvm_check_extension(int fd, long cap) {
  int r = ioctl(fd, KVM_CHECK_EXTENSION, cap);
  return r < 0 ? 0 : r;
}

uint32_t kvm_max_vcpus(int kvm_fd) {
  int max_vcpus = kvm_check_extension(kvm_fd, KVM_CAP_MAX_VCPUS);
  if (max_vcpus <= 0) max_vcpus = kvm_check_extension(kvm_fd, KVM_CAP_NR_VCPUS);
  if (max_vcpus <= 0) max_vcpus = 4;  // KVM's documented minimum when neither cap answers.
  if (max_vcpus > 254) max_vcpus = 254;
  return static_cast<uint32_t>(max_vcpus);
}

}  // namespace moss
