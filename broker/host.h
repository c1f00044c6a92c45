// Facts about the host that decide whether and how a VM can run here.
#pragma once

#include <cstdint>
#include <string>

#include "base/fd.h"
#include "base/result.h"

namespace moss::host {

// PVM (module kvm_pvm) offers the KVM API but emulates guest kernel code; an unmodified Linux
// guest never reaches user space on it. True when kvm_pvm is loaded and neither kvm_amd nor
// kvm_intel is. `sysfs` is normally "/sys" (MOSS_SYSFS_ROOT overrides it for tests).
bool is_pvm(const std::string& sysfs);

// MemTotal from /proc/meminfo text, in bytes; 0 if absent.
uint64_t mem_total_from_meminfo(const std::string& meminfo);

// Opens the KVM device read-write with a message that says how to check when it fails.
Result<UniqueFd> open_kvm(const std::string& path);

std::string kvm_path();   // MOSS_KVM_DEVICE or /dev/kvm.
std::string sysfs_root(); // MOSS_SYSFS_ROOT or /sys.

}  // namespace moss::host
