#include "broker/spore_manifest.h"

#include <algorithm>
#include <cstring>
#include <map>

#include <kj/exception.h>

#include "devices/modules.h"
#include "vcpu/bzimage.h"

namespace moss::sporemf {
namespace {

// The u32 little-endian version every state blob of ours begins with (0 for a shorter one).
uint32_t blob_version(capnp::Data::Reader blob) {
  if (blob.size() < 4) return 0;
  return static_cast<uint32_t>(blob[0]) | static_cast<uint32_t>(blob[1]) << 8 | static_cast<uint32_t>(blob[2]) << 16 |
         static_cast<uint32_t>(blob[3]) << 24;
}

void add_model(capnp::List<spore::DeviceModelState>::Builder list, unsigned i, const std::string& name,
               capnp::Data::Reader state) {
  list[i].setName(name);
  list[i].setVersion(blob_version(state));
  list[i].setState(state);
}

const char* reg_name(int reg) {
  static const char* const kNames[] = {"EAX", "EBX", "ECX", "EDX"};
  return kNames[reg & 3];
}

uint32_t reg_of(const kvm_cpuid_entry2& e, int reg) {
  switch (reg) {
    case 0: return e.eax;
    case 1: return e.ebx;
    case 2: return e.ecx;
    default: return e.edx;
  }
}

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

const kvm_cpuid_entry2* find_leaf(const std::vector<kvm_cpuid_entry2>& table, uint32_t function, uint32_t index) {
  for (const auto& e : table) {
    if (e.function != function) continue;
    if ((e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) && e.index != index) continue;
    return &e;
  }
  return nullptr;
}

}  // namespace

std::vector<uint32_t> required_kvm_caps() {
  return {KVM_CAP_IRQCHIP, KVM_CAP_PIT2,     KVM_CAP_ADJUST_CLOCK, KVM_CAP_GET_TSC_KHZ,
          KVM_CAP_VCPU_EVENTS, KVM_CAP_DEBUGREGS, KVM_CAP_XSAVE,   KVM_CAP_XCRS};
}

std::vector<RamRange> ram_ranges(uint64_t mem_bytes) {
  auto map = boot::memory_map(mem_bytes);
  std::vector<RamRange> r{{0, map.low_bytes, 0}};
  if (map.high_bytes) r.push_back({boot::kHighRamStart, map.high_bytes, map.low_bytes});
  return r;
}

std::string transport_model(size_t device_index) { return "virtio-pci-" + std::to_string(device_index); }

// Cap'n Proto reads a message lazily: a pointer the decoders did not follow can still be out
// of bounds, and capnp throws when it is read. A spore's manifest comes from a file and the
// machine state from the jailed vcpu process, so each reader below turns that into a sentence.
template <typename F>
auto malformed_is_an_error(const char* what, F f) -> decltype(f()) {
  decltype(f()) r = make_error(std::string(what) + " is malformed");
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { r = f(); })) {
    std::string why = e->getDescription().cStr();
    return make_error(std::string(what) + " is malformed (" + why.substr(0, why.find('\n')) + ")");
  }
  return r;
}

Result<void> build_unguarded(spore::Manifest::Builder out, ipc::MachineState::Reader state, const MachineFacts& f) {
  auto cpus = state.getCpus();
  if (f.cpus == 0 || cpus.size() != f.cpus) {
    return make_error("the vcpu process saved " + std::to_string(cpus.size()) + " vCPUs of a machine with " +
                      std::to_string(f.cpus));
  }
  auto devices = state.getDevices();
  if (devices.size() != f.devices.size()) {
    return make_error("the vcpu process saved " + std::to_string(devices.size()) + " devices of a machine with " +
                      std::to_string(f.devices.size()));
  }
  auto host = out.initHost();
  host.setArch(f.arch);
  host.setCpuid(cpus[0].getCpuid());
  auto caps = host.initKvmCapabilities(static_cast<unsigned>(f.kvm_caps.size()));
  for (unsigned i = 0; i < f.kvm_caps.size(); i++) caps.set(i, f.kvm_caps[i]);
  host.setTscKhz(cpus[0].getTscKhz());

  auto machine = out.initMachine();
  auto ranges = ram_ranges(f.mem_bytes);
  auto rr = machine.initRamRanges(static_cast<unsigned>(ranges.size()));
  for (unsigned i = 0; i < ranges.size(); i++) {
    rr[i].setGuestAddr(ranges[i].guest_addr);
    rr[i].setBytes(ranges[i].bytes);
  }
  machine.setCpus(f.cpus);
  machine.setCmdline(f.cmdline);
  auto devs = machine.initDevices(static_cast<unsigned>(f.devices.size()));
  for (unsigned i = 0; i < f.devices.size(); i++) {
    devs[i].setKind(f.devices[i].kind);
    devs[i].setConfig(kj::arrayPtr(f.devices[i].config.data(), f.devices[i].config.size()));
  }

  out.setVcpus(cpus);
  out.setVm(state.getVm());
  auto models = out.initDeviceModels(2 + devices.size());
  add_model(models, 0, kUartModel, state.getUart());
  add_model(models, 1, kI8042Model, state.getI8042());
  for (unsigned i = 0; i < devices.size(); i++) add_model(models, 2 + i, transport_model(i), devices[i].getTransport());
  auto workers = out.initWorkers(devices.size());
  for (unsigned i = 0; i < devices.size(); i++) {
    workers[i].setKind(f.devices[i].kind);
    workers[i].setVersion(blob_version(devices[i].getBackend()));
    workers[i].setState(devices[i].getBackend());
  }
  auto id = out.initIdentity();
  id.setGeneration(f.generation);
  id.setVsockCid(f.vsock_cid);
  id.setName(f.name);
  return {};
}

Result<uint64_t> ram_bytes_of_unguarded(spore::Manifest::Reader m) {
  uint64_t total = 0;
  for (auto r : m.getMachine().getRamRanges()) {
    if (r.getBytes() > (1ull << 50) || total + r.getBytes() < total) return make_error("the spore's RAM is implausibly large");
    total += r.getBytes();
  }
  if (total < boot::kMinMemBytes) return make_error("the spore's RAM is smaller than any machine moss makes");
  auto expected = ram_ranges(total);
  auto got = m.getMachine().getRamRanges();
  bool same = got.size() == expected.size();
  for (unsigned i = 0; same && i < got.size(); i++) {
    same = got[i].getGuestAddr() == expected[i].guest_addr && got[i].getBytes() == expected[i].bytes;
  }
  if (!same) return make_error("the spore's RAM layout is not one this moss makes");
  return total;
}

Result<void> machine_state_of_unguarded(spore::Manifest::Reader m, ipc::MachineState::Builder out) {
  auto machine = m.getMachine();
  const unsigned ndev = machine.getDevices().size();
  if (m.getVcpus().size() != machine.getCpus() || machine.getCpus() == 0) {
    return make_error("the spore holds " + std::to_string(m.getVcpus().size()) + " vCPU states for a machine of " +
                      std::to_string(machine.getCpus()));
  }
  if (m.getWorkers().size() != ndev) {
    return make_error("the spore holds " + std::to_string(m.getWorkers().size()) + " worker states for " +
                      std::to_string(ndev) + " devices");
  }
  if (!m.hasVm()) return make_error("the spore holds no VM state");
  auto model = [&](const std::string& name) -> Result<capnp::Data::Reader> {
    for (auto d : m.getDeviceModels()) {
      if (d.getName() == name.c_str()) return d.getState();
    }
    return make_error("the spore holds no state of its " + name);
  };
  out.setCpus(m.getVcpus());
  out.setVm(m.getVm());
  MOSS_TRY(auto uart, model(kUartModel));
  MOSS_TRY(auto kbd, model(kI8042Model));
  out.setUart(uart);
  out.setI8042(kbd);
  auto devs = out.initDevices(ndev);
  for (unsigned i = 0; i < ndev; i++) {
    MOSS_TRY(auto transport, model(transport_model(i)));
    auto w = m.getWorkers()[i];
    if (w.getKind() != machine.getDevices()[i].getKind()) {
      return make_error("the spore's worker state " + std::to_string(i) + " is of a " + w.getKind().cStr() +
                        " device, its device " + std::to_string(i) + " a " + machine.getDevices()[i].getKind().cStr());
    }
    devs[i].setTransport(transport);
    devs[i].setBackend(w.getState());
  }
  return {};
}

// Each kind's devices counted in the spore and in what a restore was given, in the order
// kinds first appear (the spore's first).
struct KindCount {
  std::string kind;
  unsigned recorded = 0, given = 0;
};

std::vector<KindCount> count_kinds(capnp::List<spore::Device>::Reader recorded, const std::vector<DeviceRecord>& given) {
  std::vector<KindCount> counts;
  auto entry = [&](const std::string& kind) -> KindCount& {
    auto it = std::ranges::find(counts, kind, &KindCount::kind);
    return it != counts.end() ? *it : counts.emplace_back(KindCount{kind});
  };
  for (auto d : recorded) entry(d.getKind().cStr()).recorded++;
  for (const auto& d : given) entry(d.kind).given++;
  return counts;
}

Result<void> check_devices_unguarded(capnp::List<spore::Device>::Reader recorded, const std::vector<DeviceRecord>& given) {
  const auto counts = count_kinds(recorded, given);
  for (const auto& c : counts) {
    if (device::find(c.kind) == nullptr) {
      return make_error("the spore's VM had a device of kind '" + c.kind + "', which this moss does not know");
    }
  }
  // As many devices of another mix is told device by device below; fewer or more, kind by kind.
  for (const auto& c : counts) {
    if (recorded.size() == given.size() || c.recorded == c.given) continue;
    const device::Module* module = device::find(c.kind);
    const std::string noun = module->noun();
    return make_error("the spore's VM had " + std::to_string(c.recorded) + " " + noun + (c.recorded == 1 ? "" : "s") +
                      " and " + std::to_string(c.given) + (c.given == 1 ? " was" : " were") + " given; give each of its " +
                      noun + "s with " + module->option() + ", in its order");
  }
  MOSS_ASSERT(recorded.size() == given.size());  // Equal counts of every kind.
  std::map<std::string, unsigned> checked;  // Each kind's devices checked so far.
  for (unsigned i = 0; i < given.size(); i++) {
    auto r = recorded[i];
    if (r.getKind() != given[i].kind.c_str()) {
      return make_error("the spore's device " + std::to_string(i + 1) + " is a " + r.getKind().cStr() +
                        " device and this VM's a " + given[i].kind + " device");
    }
    const unsigned nth = ++checked[given[i].kind];
    auto c = r.getConfig();
    MOSS_TRY_VOID(device::find(given[i].kind)
                      ->check_recorded(std::span<const uint8_t>(c.begin(), c.size()), given[i].config, nth));
  }
  return {};
}

std::span<const FeatureRegister> feature_registers() {
  static const FeatureRegister kRegs[] = {
      // Leaf 1: ECX 27 OSXSAVE follows the guest's CR4, 31 is the hypervisor bit moss sets;
      // EDX 9 (APIC) follows the guest's APIC base, 28 (HTT) moss sets with more vCPUs.
      {1, -1, 2, (1u << 27) | (1u << 31)},
      {1, -1, 3, (1u << 9) | (1u << 28)},
      // Leaf 7.0: ECX 4 OSPKE follows the guest's CR4.
      {7, 0, 1, 0},
      {7, 0, 2, 1u << 4},
      {7, 0, 3, 0},
      {7, 1, 0, 0},
      {0xd, 1, 0, 0},           // XSAVEOPT, XSAVEC, XGETBV1, XSAVES
      {0x80000001, -1, 2, 0},
      {0x80000001, -1, 3, 0},
      {0x80000007, -1, 3, 0},   // Invariant TSC
      {0x80000008, -1, 1, 0},
      {0x40000001, -1, 0, 0},   // KVM paravirtual features (kvmclock, ...)
  };
  return kRegs;
}

Result<std::vector<kvm_cpuid_entry2>> decode_cpuid(std::span<const uint8_t> bytes) {
  if (bytes.size() % sizeof(kvm_cpuid_entry2) != 0) {
    return make_error("the spore's CPUID table is " + std::to_string(bytes.size()) + " bytes, not whole entries");
  }
  std::vector<kvm_cpuid_entry2> out(bytes.size() / sizeof(kvm_cpuid_entry2));
  if (!out.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

Result<void> check_host_unguarded(spore::HostContract::Reader c, const HostFacts& host) {
  if (c.getArch() != host.arch.c_str()) {
    return make_error(std::string("the spore was made on a ") + c.getArch().cStr() + " host and this one is " + host.arch);
  }
  auto data = c.getCpuid();
  MOSS_TRY(auto guest, decode_cpuid(std::span<const uint8_t>(data.begin(), data.size())));
  if (guest.empty()) return make_error("the spore records no CPUID of its guest");
  for (const FeatureRegister& fr : feature_registers()) {
    for (const auto& g : guest) {
      if (g.function != fr.function) continue;
      if (fr.index >= 0 && g.index != static_cast<uint32_t>(fr.index)) continue;
      uint32_t want = reg_of(g, fr.reg) & ~fr.ignored;
      if (want == 0) continue;
      const kvm_cpuid_entry2* h = find_leaf(host.supported_cpuid, g.function, g.index);
      const kvm_cpuid_entry2* v = find_leaf(host.vcpu_cpuid, g.function, g.index);
      uint32_t have = (h ? reg_of(*h, fr.reg) : 0) | (v ? reg_of(*v, fr.reg) : 0);
      uint32_t missing = want & ~have;
      if (missing) {
        int bit = __builtin_ctz(missing);
        std::string leaf = hex(g.function);
        if (fr.index >= 0) leaf.append(".").append(std::to_string(fr.index));
        std::string message = "this host's KVM does not offer the CPU feature the spore's guest was given at CPUID leaf ";
        message.append(leaf).append(" ").append(reg_name(fr.reg)).append(" bit ").append(std::to_string(bit));
        message.append("; restore it on a host with that CPU feature");
        return make_error(message);
      }
    }
  }
  for (uint32_t cap : c.getKvmCapabilities()) {
    if (std::find(host.kvm_caps.begin(), host.kvm_caps.end(), cap) == host.kvm_caps.end()) {
      return make_error("this host's KVM lacks capability " + std::to_string(cap) + " (KVM_CAP_*), which the spore needs");
    }
  }
  const uint32_t tsc = c.getTscKhz();
  if (tsc == 0) return make_error("the spore records no TSC frequency");
  if (host.tsc_khz != 0 && tsc != host.tsc_khz && !host.tsc_scaling) {
    return make_error("the spore's guest ran its TSC at " + std::to_string(tsc) + " kHz, this host's runs at " +
                      std::to_string(host.tsc_khz) + " kHz, and its KVM cannot scale it (no KVM_CAP_TSC_CONTROL)");
  }
  return {};
}

Result<std::vector<DeviceRecord>> take_records(const std::vector<DeviceSource>& devices) {
  std::vector<DeviceRecord> records;
  for (const auto& d : devices) {
    DeviceRecord r{d.kind, {}};
    if (d.record) {
      MOSS_TRY(r.config, d.record());
    }
    records.push_back(std::move(r));
  }
  return records;
}

Result<void> build(spore::Manifest::Builder out, ipc::MachineState::Reader state, const MachineFacts& f) {
  return malformed_is_an_error("the vcpu process's machine state", [&] { return build_unguarded(out, state, f); });
}
Result<uint64_t> ram_bytes_of(spore::Manifest::Reader m) {
  return malformed_is_an_error("the spore's manifest", [&] { return ram_bytes_of_unguarded(m); });
}
Result<void> machine_state_of(spore::Manifest::Reader m, ipc::MachineState::Builder out) {
  return malformed_is_an_error("the spore's manifest", [&] { return machine_state_of_unguarded(m, out); });
}
Result<void> check_devices(capnp::List<spore::Device>::Reader recorded, const std::vector<DeviceRecord>& given) {
  return malformed_is_an_error("the spore's manifest", [&] { return check_devices_unguarded(recorded, given); });
}
Result<void> check_host(spore::HostContract::Reader c, const HostFacts& host) {
  return malformed_is_an_error("the spore's manifest", [&] { return check_host_unguarded(c, host); });
}

}  // namespace moss::sporemf
