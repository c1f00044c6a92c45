#include "broker/host.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace moss::host {
namespace {
bool exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}
}  // namespace

bool is_pvm(const std::string& sysfs) {
  return exists(sysfs + "/module/kvm_pvm") && !exists(sysfs + "/module/kvm_amd") &&
         !exists(sysfs + "/module/kvm_intel");
}

uint64_t mem_total_from_meminfo(const std::string& meminfo) {
  std::istringstream in(meminfo);
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit) {
    if (key == "MemTotal:") return kib * 1024;
  }
  return 0;
}

std::string kvm_path() {
  const char* p = std::getenv("MOSS_KVM_DEVICE");
  return p && *p ? p : "/dev/kvm";
}

std::string sysfs_root() {
  const char* p = std::getenv("MOSS_SYSFS_ROOT");
  return p && *p ? p : "/sys";
}

Result<UniqueFd> open_kvm(const std::string& path) {
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd >= 0) return UniqueFd(fd);
  int e = errno;
  if (e == ENOENT) {
    return make_error(path + " does not exist: this host offers no KVM; enable hardware virtualization and load "
                      "kvm_intel or kvm_amd (check with: ls -l /dev/kvm; lsmod | grep kvm), or use the nested "
                      "test host (tests/nested/run-in-nested-host.sh)", e);
  }
  if (e == EACCES || e == EPERM) {
    return make_error("no permission to open " + path + ": add yourself to its group (check with: ls -l " + path + ")", e);
  }
  return sys_error_code(e, "open", path);
}

}  // namespace moss::host
