// The decoders of saved machine state: a round trip, and each malformed case refused with
// its reason.
#include "vcpu/cpu_state_codec.h"

#include <gtest/gtest.h>

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstring>
#include <functional>
#include <string>

namespace moss {
namespace {

VcpuState sample_cpu() {
  VcpuState s;
  s.cpuid = {kvm_cpuid_entry2{0, 0, 0, 0xd, 1, 2, 3, {}}, kvm_cpuid_entry2{1, 0, 0, 4, 5, 6, 7, {}}};
  s.mp_state.mp_state = KVM_MP_STATE_HALTED;
  s.regs.rip = 0x1234;
  s.sregs.cr0 = 0x80000011;
  s.xsave.assign(4096, 0);
  s.xsave[512] = 3;
  s.xcrs.nr_xcrs = 1;
  s.lapic.regs[0x20] = 5;
  s.msrs = {{kMsrIa32Tsc, 0, 42}, {kMsrIa32TscDeadline, 0, 99}};
  s.events.exception.injected = 1;
  s.debugregs.dr7 = 0x400;
  s.tsc_khz = 2'500'000;
  return s;
}

VmState sample_vm() {
  VmState v;
  v.pit.channels[0].count = 65536;
  v.clock.clock = 123456789;
  v.clock.flags = KVM_CLOCK_TSC_STABLE;
  v.pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
  v.pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
  v.ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
  return v;
}

// A MachineState with one sample vCPU, edited by `edit`, decoded.
Result<MachineStateValue> decode_edited(const std::function<void(ipc::MachineState::Builder)>& edit) {
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<ipc::MachineState>();
  encode_cpu_state(sample_cpu(), m.initCpus(1)[0]);
  encode_vm_state(sample_vm(), m.initVm());
  Uart uart([](uint8_t) {}, [](bool) {});
  auto u = uart.state();
  m.setUart(kj::arrayPtr(u.data(), u.size()));
  I8042 kbd;
  auto k = kbd.state();
  m.setI8042(kj::arrayPtr(k.data(), k.size()));
  edit(m);
  return decode_machine_state(m.asReader());
}

std::string reason(const Result<MachineStateValue>& r) { return r ? "(accepted)" : r.error().message; }

TEST(CpuStateCodec, AMachineStateSurvivesARoundTrip) {
  auto r = decode_edited([](auto) {});
  ASSERT_TRUE(r) << reason(r);
  const auto& c = r->cpus.at(0);
  auto s = sample_cpu();
  EXPECT_EQ(c.cpuid.size(), 2u);
  EXPECT_EQ(c.cpuid[1].edx, 7u);
  EXPECT_EQ(c.mp_state.mp_state, static_cast<uint32_t>(KVM_MP_STATE_HALTED));
  EXPECT_EQ(c.regs.rip, 0x1234u);
  EXPECT_EQ(c.sregs.cr0, s.sregs.cr0);
  EXPECT_EQ(c.xsave, s.xsave);
  EXPECT_EQ(c.lapic.regs[0x20], 5);
  ASSERT_EQ(c.msrs.size(), 2u);
  EXPECT_EQ(c.msrs[1].data, 99u);
  EXPECT_EQ(c.events.exception.injected, 1);
  EXPECT_EQ(c.debugregs.dr7, 0x400u);
  EXPECT_EQ(c.tsc_khz, 2'500'000u);
  EXPECT_EQ(r->vm.clock.clock, 123456789u);
  EXPECT_EQ(r->vm.clock.flags, static_cast<uint32_t>(KVM_CLOCK_TSC_STABLE));
  EXPECT_EQ(r->vm.pit.channels[0].count, 65536u);
  EXPECT_EQ(r->vm.ioapic.chip_id, static_cast<uint32_t>(KVM_IRQCHIP_IOAPIC));
}

TEST(CpuStateCodec, EachMalformedStateIsRefusedWithItsReason) {
  struct Case {
    const char* name;
    std::function<void(ipc::MachineState::Builder)> edit;
    const char* reason;
  };
  auto bytes = [](size_t n) {
    auto a = kj::heapArray<capnp::byte>(n);
    std::memset(a.begin(), 0, n);
    return a;
  };
  const Case cases[] = {
      {"unknown cpu version", [](auto m) { m.getCpus()[0].setVersion(2); }, "vCPU 0: the saved vCPU state has version 2, this moss reads 1"},
      {"no version", [](auto m) { m.getCpus()[0].setVersion(0); }, "has version 0"},
      {"truncated regs", [&](auto m) { m.getCpus()[0].setRegs(bytes(3)); }, "the saved general registers is 3 bytes"},
      {"long sregs", [&](auto m) { m.getCpus()[0].setSregs(bytes(sizeof(kvm_sregs) + 1)); }, "the saved special registers is"},
      {"short xsave", [&](auto m) { m.getCpus()[0].setXsave(bytes(4092)); }, "the saved XSAVE area is 4092 bytes"},
      {"huge xsave", [&](auto m) { m.getCpus()[0].setXsave(bytes(kMaxXsaveBytes + 4)); }, "the saved XSAVE area is"},
      {"odd xsave", [&](auto m) { m.getCpus()[0].setXsave(bytes(4097)); }, "it must be a multiple of 4"},
      {"lapic", [&](auto m) { m.getCpus()[0].setLapic(bytes(1000)); }, "the saved local APIC is 1000 bytes"},
      {"events", [&](auto m) { m.getCpus()[0].setEvents(bytes(0)); }, "the saved vCPU events is 0 bytes"},
      {"debugregs", [&](auto m) { m.getCpus()[0].setDebugregs(bytes(8)); }, "the saved debug registers is 8 bytes"},
      {"msr partial entry", [&](auto m) { m.getCpus()[0].setMsrs(bytes(17)); }, "the saved MSR list is 17 bytes"},
      {"too many msrs",
       [&](auto m) {
         auto b = bytes((kMaxSavedMsrs + 1) * sizeof(kvm_msr_entry));
         for (size_t i = 0; i <= kMaxSavedMsrs; i++) {
           uint32_t idx = static_cast<uint32_t>(i);
           std::memcpy(b.begin() + i * sizeof(kvm_msr_entry), &idx, 4);
         }
         m.getCpus()[0].setMsrs(b);
       },
       "the saved MSR list has 1025 entries, not 0 to 1024"},
      {"msr twice",
       [&](auto m) {
         std::vector<kvm_msr_entry> e{{0x10, 0, 1}, {0x10, 0, 2}};
         m.getCpus()[0].setMsrs(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(e.data()), e.size() * sizeof e[0]));
       },
       "the saved MSR list names an MSR twice"},
      {"no cpuid", [&](auto m) { m.getCpus()[0].setCpuid(bytes(0)); }, "the saved CPUID has 0 entries, not 1 to 256"},
      {"cpuid partial", [&](auto m) { m.getCpus()[0].setCpuid(bytes(41)); }, "the saved CPUID is 41 bytes"},
      {"too many cpuid", [&](auto m) { m.getCpus()[0].setCpuid(bytes(257 * sizeof(kvm_cpuid_entry2))); }, "has 257 entries"},
      {"xcrs count",
       [&](auto m) {
         kvm_xcrs x{};
         x.nr_xcrs = KVM_MAX_XCRS + 1;
         m.getCpus()[0].setXcrs(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(&x), sizeof x));
       },
       "the saved XCR count is out of range"},
      {"mp state", [](auto m) { m.getCpus()[0].setMpState(99); }, "the saved MP state is unknown"},
      {"no tsc", [](auto m) { m.getCpus()[0].setTscKhz(0); }, "the saved vCPU state has no TSC frequency"},
      {"no cpus", [](auto m) { m.initCpus(0); }, "the saved machine has 0 vCPUs"},
      {"vm version", [](auto m) { m.getVm().setVersion(7); }, "the saved VM state has version 7, this moss reads 1"},
      {"pit", [&](auto m) { m.getVm().setPit(bytes(12)); }, "the saved PIT is 12 bytes"},
      {"clock", [&](auto m) { m.getVm().setClock(bytes(0)); }, "the saved kvmclock is 0 bytes"},
      {"ioapic", [&](auto m) { m.getVm().setIoapic(bytes(100)); }, "the saved IOAPIC is 100 bytes"},
      {"chips swapped",
       [&](auto m) {
         auto a = kj::heapArray<capnp::byte>(m.getVm().getPicMaster());
         m.getVm().setPicMaster(m.getVm().getPicSlave());
         m.getVm().setPicSlave(a);
       },
       "not the master PIC, slave PIC and IOAPIC in that order"},
      {"uart", [&](auto m) { m.setUart(bytes(2)); }, "the saved UART state is truncated"},
      {"i8042", [&](auto m) { m.setI8042(bytes(0)); }, "the saved i8042 state is truncated"},
  };
  for (const auto& c : cases) {
    auto r = decode_edited(c.edit);
    EXPECT_NE(reason(r).find(c.reason), std::string::npos) << c.name << ": " << reason(r);
  }
}

TEST(CpuStateCodec, BytesThatAreNoMessageAreAnErrorNotAnException) {
  std::vector<uint8_t> junk(64, 0xff);
  auto r = decode_machine_state_message(junk);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("the saved machine state is malformed"), std::string::npos) << r.error().message;
  EXPECT_FALSE(decode_machine_state_message(std::vector<uint8_t>(7, 0)));
  EXPECT_FALSE(decode_machine_state_message({}));
}

TEST(CpuStateCodec, AWholeMessageDecodesFromItsBytes) {
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<ipc::MachineState>();
  encode_cpu_state(sample_cpu(), m.initCpus(1)[0]);
  encode_vm_state(sample_vm(), m.initVm());
  auto u = Uart([](uint8_t) {}, [](bool) {}).state();
  m.setUart(kj::arrayPtr(u.data(), u.size()));
  auto k = I8042().state();
  m.setI8042(kj::arrayPtr(k.data(), k.size()));
  auto words = capnp::messageToFlatArray(mb);
  auto bytes = words.asBytes();
  auto r = decode_machine_state_message({bytes.begin(), bytes.size()});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->cpus.size(), 1u);
  // Cut anywhere, it is refused.
  for (size_t cut : {size_t{8}, bytes.size() / 2, bytes.size() - 8}) {
    EXPECT_FALSE(decode_machine_state_message({bytes.begin(), cut})) << cut;
  }
}

}  // namespace
}  // namespace moss
