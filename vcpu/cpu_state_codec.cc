#include "vcpu/cpu_state_codec.h"

#include <algorithm>
#include <cstring>
#include <string>

#include <capnp/serialize.h>
#include <kj/exception.h>

namespace moss {
namespace {

template <typename T>
kj::ArrayPtr<const capnp::byte> bytes_of(const T& v) {
  return kj::arrayPtr(reinterpret_cast<const capnp::byte*>(&v), sizeof v);
}

template <typename T>
kj::ArrayPtr<const capnp::byte> bytes_of_vector(const std::vector<T>& v) {
  return kj::arrayPtr(reinterpret_cast<const capnp::byte*>(v.data()), v.size() * sizeof(T));
}

template <typename T>
Result<void> read_exact(capnp::Data::Reader in, T& out, const char* what) {
  if (in.size() != sizeof out) {
    return make_error(std::string("the saved ") + what + " is " + std::to_string(in.size()) + " bytes, not " +
                      std::to_string(sizeof out));
  }
  std::memcpy(&out, in.begin(), sizeof out);
  return {};
}

// An array of `T` with at most `max` (and at least `min`) entries.
template <typename T>
Result<std::vector<T>> read_array(capnp::Data::Reader in, size_t min, size_t max, const char* what) {
  if (in.size() % sizeof(T) != 0) {
    return make_error(std::string("the saved ") + what + " is " + std::to_string(in.size()) + " bytes, not a whole number of " +
                      std::to_string(sizeof(T)) + "-byte entries");
  }
  size_t n = in.size() / sizeof(T);
  if (n < min || n > max) {
    return make_error(std::string("the saved ") + what + " has " + std::to_string(n) + " entries, not " + std::to_string(min) +
                      " to " + std::to_string(max));
  }
  std::vector<T> out(n);
  if (n) std::memcpy(out.data(), in.begin(), in.size());
  return out;
}

}  // namespace

void encode_cpu_state(const VcpuState& s, ipc::CpuState::Builder out) {
  out.setVersion(ipc::CPU_STATE_VERSION);
  out.setCpuid(bytes_of_vector(s.cpuid));
  out.setMpState(s.mp_state.mp_state);
  out.setRegs(bytes_of(s.regs));
  out.setSregs(bytes_of(s.sregs));
  out.setXsave(bytes_of_vector(s.xsave));
  out.setXcrs(bytes_of(s.xcrs));
  out.setDebugregs(bytes_of(s.debugregs));
  out.setLapic(bytes_of(s.lapic));
  out.setMsrs(bytes_of_vector(s.msrs));
  out.setEvents(bytes_of(s.events));
  out.setTscKhz(s.tsc_khz);
}

Result<VcpuState> decode_cpu_state(ipc::CpuState::Reader in) {
  if (in.getVersion() != ipc::CPU_STATE_VERSION) {
    return make_error("the saved vCPU state has version " + std::to_string(in.getVersion()) + ", this moss reads " +
                      std::to_string(ipc::CPU_STATE_VERSION));
  }
  VcpuState s;
  MOSS_TRY_VOID(read_exact(in.getRegs(), s.regs, "general registers"));
  MOSS_TRY_VOID(read_exact(in.getSregs(), s.sregs, "special registers"));
  auto xsave = in.getXsave();
  if (xsave.size() < kLegacyXsaveBytes || xsave.size() > kMaxXsaveBytes || xsave.size() % 4 != 0) {
    return make_error("the saved XSAVE area is " + std::to_string(xsave.size()) + " bytes; it must be a multiple of 4 from " +
                      std::to_string(kLegacyXsaveBytes) + " to " + std::to_string(kMaxXsaveBytes));
  }
  s.xsave.assign(xsave.begin(), xsave.end());
  MOSS_TRY_VOID(read_exact(in.getXcrs(), s.xcrs, "XCRs"));
  if (s.xcrs.nr_xcrs > KVM_MAX_XCRS) return make_error("the saved XCR count is out of range");
  MOSS_TRY_VOID(read_exact(in.getDebugregs(), s.debugregs, "debug registers"));
  MOSS_TRY_VOID(read_exact(in.getLapic(), s.lapic, "local APIC"));
  MOSS_TRY(s.msrs, read_array<kvm_msr_entry>(in.getMsrs(), 0, kMaxSavedMsrs, "MSR list"));
  {
    std::vector<uint32_t> indices;
    for (const auto& e : s.msrs) indices.push_back(e.index);
    std::sort(indices.begin(), indices.end());
    if (std::adjacent_find(indices.begin(), indices.end()) != indices.end()) {
      return make_error("the saved MSR list names an MSR twice");
    }
  }
  MOSS_TRY_VOID(read_exact(in.getEvents(), s.events, "vCPU events"));
  MOSS_TRY(s.cpuid, read_array<kvm_cpuid_entry2>(in.getCpuid(), 1, kMaxSavedCpuidEntries, "CPUID"));
  s.mp_state.mp_state = in.getMpState();
  if (s.mp_state.mp_state > KVM_MP_STATE_AP_RESET_HOLD) return make_error("the saved MP state is unknown");
  s.tsc_khz = in.getTscKhz();
  if (s.tsc_khz == 0) return make_error("the saved vCPU state has no TSC frequency");
  return s;
}

void encode_vm_state(const VmState& s, ipc::VmState::Builder out) {
  out.setVersion(ipc::VM_STATE_VERSION);
  out.setPit(bytes_of(s.pit));
  out.setClock(bytes_of(s.clock));
  out.setPicMaster(bytes_of(s.pic_master));
  out.setPicSlave(bytes_of(s.pic_slave));
  out.setIoapic(bytes_of(s.ioapic));
}

Result<VmState> decode_vm_state(ipc::VmState::Reader in) {
  if (in.getVersion() != ipc::VM_STATE_VERSION) {
    return make_error("the saved VM state has version " + std::to_string(in.getVersion()) + ", this moss reads " +
                      std::to_string(ipc::VM_STATE_VERSION));
  }
  VmState s;
  MOSS_TRY_VOID(read_exact(in.getPit(), s.pit, "PIT"));
  MOSS_TRY_VOID(read_exact(in.getClock(), s.clock, "kvmclock"));
  MOSS_TRY_VOID(read_exact(in.getPicMaster(), s.pic_master, "master PIC"));
  MOSS_TRY_VOID(read_exact(in.getPicSlave(), s.pic_slave, "slave PIC"));
  MOSS_TRY_VOID(read_exact(in.getIoapic(), s.ioapic, "IOAPIC"));
  if (s.pic_master.chip_id != KVM_IRQCHIP_PIC_MASTER || s.pic_slave.chip_id != KVM_IRQCHIP_PIC_SLAVE ||
      s.ioapic.chip_id != KVM_IRQCHIP_IOAPIC) {
    return make_error("the saved interrupt controllers are not the master PIC, slave PIC and IOAPIC in that order");
  }
  return s;
}

Result<MachineStateValue> decode_machine_state(ipc::MachineState::Reader in) {
  MachineStateValue m;
  auto cpus = in.getCpus();
  if (cpus.size() == 0 || cpus.size() > kMaxSavedCpus) {
    return make_error("the saved machine has " + std::to_string(cpus.size()) + " vCPUs, not 1 to " + std::to_string(kMaxSavedCpus));
  }
  for (unsigned i = 0; i < cpus.size(); i++) {
    auto c = decode_cpu_state(cpus[i]);
    if (!c) return make_error("vCPU " + std::to_string(i) + ": " + c.error().message);
    m.cpus.push_back(std::move(*c));
  }
  MOSS_TRY(m.vm, decode_vm_state(in.getVm()));
  auto uart = in.getUart();
  MOSS_TRY(m.uart, decode_uart_state({uart.begin(), uart.size()}));
  auto kbd = in.getI8042();
  MOSS_TRY(m.i8042, decode_i8042_state({kbd.begin(), kbd.size()}));
  return m;
}

Result<MachineStateValue> decode_machine_state_message(std::span<const uint8_t> bytes) {
  if (bytes.size() % sizeof(capnp::word) != 0) return make_error("the saved machine state is not a whole number of words");
  // Copied into words: Cap'n Proto reads aligned words, and the caller's bytes may not be.
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  if (!bytes.empty()) std::memcpy(words.begin(), bytes.data(), bytes.size());
  Result<MachineStateValue> out = make_error("the saved machine state is malformed");
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    capnp::FlatArrayMessageReader reader(words);
    out = decode_machine_state(reader.getRoot<ipc::MachineState>());
  })) {
    return make_error(std::string("the saved machine state is malformed: ") + e->getDescription().cStr());
  }
  return out;
}

}  // namespace moss
