// What a /dev/kvm fd can do, asked without building a VM: a leaf library (moss_kvm_caps) the
// broker links to check a host before it starts the vcpu process, without the KVM machine.
#pragma once

#include <cstdint>

#include "base/result.h"

namespace moss {

// A system /dev/kvm fd, checked for API version 12.
Result<void> kvm_check_api(int kvm_fd);
int kvm_check_extension(int fd, long cap);  // 0 when absent.
// The most vCPUs a VM of this host may have, as moss uses them: KVM's recommended maximum
// (KVM_CAP_MAX_VCPUS, else KVM_CAP_NR_VCPUS, else its documented minimum of 4), at most 254
// (xAPIC ids, with one left for the IOAPIC).
uint32_t kvm_max_vcpus(int kvm_fd);

}  // namespace moss
