// The broker's steps of `moss restore SPORE` and `moss run --from SPORE` before the vcpu
// process starts (broker/run.cc runs them in order): read and check the spore, check this
// host against its host contract, check the disks the user named against what the spore
// recorded, and fill guest RAM from the store. Every refusal is one sentence, given before
// the guest runs an instruction.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/result.h"
#include "broker/spore_manifest.h"
#include "store/spore.h"

namespace moss::restore {

struct Loaded {
  store::Spore spore;
  std::string store_dir;
  uint64_t mem_bytes = 0;
  uint32_t cpus = 0;
  std::string cmdline;
  uint64_t generation = 0;  // The restored VM's: the spore's + 1.
};

// Reads SPORE/manifest (store::read_spore: version, shape, memory map) and the machine it
// describes. `store_dir` empty: the default store.
Result<Loaded> load(const std::string& spore, const std::string& store_dir);

// This host as check_host() compares it: its architecture, KVM_GET_SUPPORTED_CPUID, which of
// `caps` its KVM has, and its TSC frequency (from a throwaway vCPU; 0 if that fails: the vcpu
// process checks it again when it restores the vCPUs).
Result<sporemf::HostFacts> host_facts(int kvm_fd, const std::vector<uint32_t>& caps);

// The devices planned for the restore (the user's --disk in order, then vsock), their records
// taken now, against the manifest's: the same count of each kind, the same kinds in the same
// order, and each record as its module wants it (a disk the same size and identity as
// recorded: devices/blk/module.h DiskRecord).
Result<void> check_devices(spore::Manifest::Reader manifest, const std::vector<sporemf::DeviceSource>& planned);

// Fills the guest RAM memfd `ram` (of `mem_bytes`) from the spore's chunks, each verified.
Result<void> fill_ram(const Loaded& loaded, int ram);

}  // namespace moss::restore
