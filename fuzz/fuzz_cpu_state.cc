// libFuzzer target: a saved machine state (vCPUs, VM, UART, i8042) as the bytes of one Cap'n
// Proto MachineState message, as a spore holds it. Checks more than "no crash": whatever
// decodes must survive a re-encode and decode unchanged, and every decoded value must be
// within the limits the decoders promise (vcpu/cpu_state_codec.h).
#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "vcpu/cpu_state_codec.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void check_limits(const moss::MachineStateValue& m) {
  check(!m.cpus.empty() && m.cpus.size() <= moss::kMaxSavedCpus);
  for (const auto& c : m.cpus) {
    check(!c.cpuid.empty() && c.cpuid.size() <= moss::kMaxSavedCpuidEntries);
    check(c.msrs.size() <= moss::kMaxSavedMsrs);
    check(c.xsave.size() >= moss::kLegacyXsaveBytes && c.xsave.size() <= moss::kMaxXsaveBytes);
    check(c.xcrs.nr_xcrs <= KVM_MAX_XCRS);
    check(c.tsc_khz != 0);
  }
  check(m.uart.rx.size() <= moss::Uart::kRxCapacity);
  check(m.i8042.output.size() <= moss::I8042::kMaxOutput);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto first = moss::decode_machine_state_message({data, size});
  if (!first) return 0;
  check_limits(*first);
  // Re-encode what was decoded: it must decode to the same bytes again.
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<moss::ipc::MachineState>();
  auto cpus = m.initCpus(static_cast<unsigned>(first->cpus.size()));
  for (unsigned i = 0; i < cpus.size(); i++) moss::encode_cpu_state(first->cpus[i], cpus[i]);
  moss::encode_vm_state(first->vm, m.initVm());
  moss::Uart uart([](uint8_t) {}, [](bool) {});
  uart.restore(first->uart);
  auto u = uart.state();
  m.setUart(kj::arrayPtr(u.data(), u.size()));
  moss::I8042 kbd;
  kbd.restore(first->i8042);
  auto k = kbd.state();
  m.setI8042(kj::arrayPtr(k.data(), k.size()));
  auto words = capnp::messageToFlatArray(mb);
  auto bytes = words.asBytes();
  auto second = moss::decode_machine_state_message({bytes.begin(), bytes.size()});
  check(second.ok());
  check(second->cpus.size() == first->cpus.size());
  for (size_t i = 0; i < first->cpus.size(); i++) {
    const auto &a = first->cpus[i], &b = second->cpus[i];
    check(a.xsave == b.xsave && a.msrs.size() == b.msrs.size() && a.cpuid.size() == b.cpuid.size());
    check(std::memcmp(&a.regs, &b.regs, sizeof a.regs) == 0 && std::memcmp(&a.lapic, &b.lapic, sizeof a.lapic) == 0);
    check(a.tsc_khz == b.tsc_khz && a.mp_state.mp_state == b.mp_state.mp_state);
  }
  check(std::memcmp(&first->vm.clock, &second->vm.clock, sizeof first->vm.clock) == 0);
  check(second->uart.rx == first->uart.rx && second->i8042.output == first->i8042.output);
  return 0;
}
