#include "broker/restore.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstring>

#include "base/syscall.h"
#include "broker/generation.h"
#include "vcpu/kvm_caps.h"

namespace moss::restore {
namespace {

// struct kvm_cpuid2 without its flexible array (whose C++ sizeof is not the kernel's 8): the
// ioctl number encodes the header's size.
struct Cpuid2Header {
  uint32_t nent;
  uint32_t padding;
};
constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, Cpuid2Header);
constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, Cpuid2Header);
constexpr unsigned long kGetCpuid2 = _IOWR(KVMIO, 0x91, Cpuid2Header);

std::vector<uint8_t> cpuid_buffer(const std::vector<kvm_cpuid_entry2>& entries, uint32_t room) {
  std::vector<uint8_t> buf(sizeof(Cpuid2Header) + room * sizeof(kvm_cpuid_entry2));
  reinterpret_cast<Cpuid2Header*>(buf.data())->nent = room;
  if (!entries.empty()) std::memcpy(buf.data() + sizeof(Cpuid2Header), entries.data(), entries.size() * sizeof(kvm_cpuid_entry2));
  return buf;
}

}  // namespace

Result<Loaded> load(const std::string& spore, const std::string& store_dir) {
  Loaded l;
  if (store_dir.empty()) {
    MOSS_TRY(l.store_dir, store::default_store_dir());
  } else {
    l.store_dir = store_dir;
  }
  MOSS_TRY(l.spore, store::read_spore(spore));
  auto root = l.spore.manifest->root();
  if (l.spore.manifest->has_parent()) {
    return make_error("the spore " + spore + " is relative to another spore, which this moss cannot restore");
  }
  MOSS_TRY(l.mem_bytes, sporemf::ram_bytes_of(root));
  l.cpus = root.getMachine().getCpus();
  if (l.cpus == 0 || root.getVcpus().size() != l.cpus) {
    return make_error("the spore " + spore + " holds " + std::to_string(root.getVcpus().size()) +
                      " vCPU states for a machine of " + std::to_string(l.cpus));
  }
  l.cmdline = root.getMachine().getCmdline().cStr();
  // A fresh random generation, not the spore's plus one: two restores of one spore are two
  // VMs and must differ (as VMGenID's ids do).
  MOSS_TRY(l.generation, fresh_generation());
  return l;
}

Result<sporemf::HostFacts> host_facts(int kvm_fd, const std::vector<uint32_t>& caps) {
  sporemf::HostFacts h;
  utsname u{};
  if (uname(&u) == 0) h.arch = u.machine;
  for (uint32_t n = 64; n <= 4096; n *= 2) {
    std::vector<uint8_t> buf(sizeof(Cpuid2Header) + n * sizeof(kvm_cpuid_entry2));
    auto* c = reinterpret_cast<Cpuid2Header*>(buf.data());
    c->nent = n;
    if (ioctl(kvm_fd, kGetSupportedCpuid, c) == 0) {
      h.supported_cpuid.resize(c->nent);
      std::memcpy(h.supported_cpuid.data(), buf.data() + sizeof(Cpuid2Header), c->nent * sizeof(kvm_cpuid_entry2));
      break;
    }
    if (errno != E2BIG) return sys_error("ask KVM for the CPUID it supports", "/dev/kvm");
  }
  for (uint32_t cap : caps) {
    if (kvm_check_extension(kvm_fd, cap) > 0) h.kvm_caps.push_back(cap);
  }
  h.tsc_scaling = kvm_check_extension(kvm_fd, KVM_CAP_TSC_CONTROL) > 0;
  // The host's TSC frequency is a vCPU's: ask a throwaway one.
  int vm = ioctl(kvm_fd, KVM_CREATE_VM, 0);
  if (vm >= 0) {
    UniqueFd vm_fd(vm);
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu >= 0) {
      UniqueFd vcpu_fd(vcpu);
      int khz = ioctl(vcpu, KVM_GET_TSC_KHZ, 0);
      if (khz > 0) h.tsc_khz = static_cast<uint32_t>(khz);
      // What a vCPU given the supported CPUID shows (see HostFacts::vcpu_cpuid).
      auto set = cpuid_buffer(h.supported_cpuid, static_cast<uint32_t>(h.supported_cpuid.size()));
      if (ioctl(vcpu, kSetCpuid2, set.data()) == 0) {
        auto got = cpuid_buffer({}, 4096);
        if (ioctl(vcpu, kGetCpuid2, got.data()) == 0) {
          uint32_t n = reinterpret_cast<Cpuid2Header*>(got.data())->nent;
          h.vcpu_cpuid.resize(n);
          std::memcpy(h.vcpu_cpuid.data(), got.data() + sizeof(Cpuid2Header), n * sizeof(kvm_cpuid_entry2));
        }
      }
    }
  }
  return h;
}

Result<void> check_devices(spore::Manifest::Reader manifest, const std::vector<sporemf::DeviceSource>& planned) {
  MOSS_TRY(auto given, sporemf::take_records(planned));
  return sporemf::check_devices(manifest.getMachine().getDevices(), given);
}

Result<void> fill_ram(const Loaded& loaded, int ram) {
  MOSS_TRY(auto st, store::ChunkStore::open(loaded.store_dir));
  void* map = mmap(nullptr, loaded.mem_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, ram, 0);
  if (map == MAP_FAILED) return sys_error("map guest RAM to fill it");
  std::vector<store::RamRegionMut> regions;
  for (const auto& r : sporemf::ram_ranges(loaded.mem_bytes)) {
    regions.push_back({r.guest_addr, {static_cast<uint8_t*>(map) + r.file_offset, r.bytes}});
  }
  // A fresh memfd reads as zeros: zero chunks leave their pages untouched (never allocated).
  auto filled = store::load_ram(st, loaded.spore, regions, /*ram_is_zero=*/true);
  munmap(map, loaded.mem_bytes);
  return filled;
}

}  // namespace moss::restore
