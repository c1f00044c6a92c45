// libFuzzer target: what a restore makes of a spore's manifest beyond store/manifest.h's
// decoder (broker/spore_manifest.h): the machine state handed to the vcpu process, the RAM
// layout, the host contract checked against a host, each recorded disk (devices/blk/module.h
// DiskRecord) against the disks given. All pure; each refusal is one sentence.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include <capnp/message.h>

#include "broker/spore_manifest.h"
#include "devices/blk/module.h"
#include "store/manifest.h"

namespace {

void one_sentence(const moss::Error& e) {
  if (e.message.empty() || e.message.find('\n') != std::string::npos) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moss;
  auto m = store::decode_manifest(std::span<const uint8_t>(data, size));
  if (!m.ok()) return 0;
  auto root = (*m)->root();
  capnp::MallocMessageBuilder out;
  if (auto r = sporemf::machine_state_of(root, out.initRoot<ipc::MachineState>()); !r) one_sentence(r.error());
  if (auto r = sporemf::ram_bytes_of(root); !r) one_sentence(r.error());
  sporemf::HostFacts host;
  host.arch = "x86_64";
  host.supported_cpuid = {kvm_cpuid_entry2{1, 0, 0, 0, 0, 0xffffffff, 0xffffffff, {}}};
  host.kvm_caps = sporemf::required_kvm_caps();
  host.tsc_khz = 2'000'000;
  if (auto r = sporemf::check_host(root.getHost(), host); !r) one_sentence(r.error());
  std::vector<sporemf::DeviceRecord> given;
  for (auto d : root.getMachine().getDevices()) {
    auto c = d.getConfig();
    std::span<const uint8_t> bytes(c.begin(), c.size());
    if (d.getKind() == "blk") {
      auto rec = device::blk::decode_disk_record(bytes);
      if (rec.ok() && device::blk::encode_disk_record(*rec) != std::vector<uint8_t>(bytes.begin(), bytes.end())) {
        __builtin_trap();  // What decodes must encode back to the same bytes.
      }
      if (!rec.ok()) one_sentence(rec.error());
    }
    given.push_back({d.getKind().cStr(), device::blk::encode_disk_record({4096, 1, 2, false})});
  }
  if (auto r = sporemf::check_devices(root.getMachine().getDevices(), given); !r) one_sentence(r.error());
  return 0;
}
