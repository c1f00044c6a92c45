// The order in which vCPU and VM state reach KVM, as a tested fact: a fake ioctl layer
// records every call that save/restore (vcpu/kvm.cc) makes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "vcpu/kvm.h"

namespace moss {
namespace {

std::string name_of(unsigned long request) {
  static const std::map<unsigned long, std::string> kNames = {
      {kKvmGetCpuid2, "GET_CPUID2"},         {kKvmSetCpuid2, "SET_CPUID2"},
      {KVM_SET_TSC_KHZ, "SET_TSC_KHZ"},      {KVM_GET_TSC_KHZ, "GET_TSC_KHZ"},
      {KVM_GET_MP_STATE, "GET_MP_STATE"},    {KVM_SET_MP_STATE, "SET_MP_STATE"},
      {KVM_GET_REGS, "GET_REGS"},            {KVM_SET_REGS, "SET_REGS"},
      {KVM_GET_SREGS, "GET_SREGS"},          {KVM_SET_SREGS, "SET_SREGS"},
      {kKvmGetXsave, "GET_XSAVE"},           {kKvmGetXsave2, "GET_XSAVE2"},
      {kKvmSetXsave, "SET_XSAVE"},           {KVM_GET_XCRS, "GET_XCRS"},
      {KVM_SET_XCRS, "SET_XCRS"},            {KVM_GET_DEBUGREGS, "GET_DEBUGREGS"},
      {KVM_SET_DEBUGREGS, "SET_DEBUGREGS"},  {KVM_GET_LAPIC, "GET_LAPIC"},
      {KVM_SET_LAPIC, "SET_LAPIC"},          {kKvmGetMsrs, "GET_MSRS"},
      {kKvmSetMsrs, "SET_MSRS"},             {KVM_GET_VCPU_EVENTS, "GET_VCPU_EVENTS"},
      {KVM_SET_VCPU_EVENTS, "SET_VCPU_EVENTS"}, {KVM_GET_PIT2, "GET_PIT2"},
      {KVM_SET_PIT2, "SET_PIT2"},            {KVM_GET_IRQCHIP, "GET_IRQCHIP"},
      {KVM_SET_IRQCHIP, "SET_IRQCHIP"},      {KVM_GET_CLOCK, "GET_CLOCK"},
      {KVM_SET_CLOCK, "SET_CLOCK"},
  };
  auto it = kNames.find(request);
  return it == kNames.end() ? "UNKNOWN" : it->second;
}

// A vCPU or VM that answers like KVM and logs "tag:NAME" for every call.
class FakeKvm : public KvmIoctl {
 public:
  FakeKvm(std::string tag, std::vector<std::string>* log) : tag_(std::move(tag)), log_(log) {}

  int ioctl(unsigned long request, void* arg) override {
    log_->push_back(tag_ + ":" + name_of(request));
    if (request == kKvmGetCpuid2) {
      auto* hdr = static_cast<KvmCpuid2Header*>(arg);
      if (hdr->nent < cpuid.size()) {
        errno = E2BIG;
        return -1;
      }
      hdr->nent = static_cast<uint32_t>(cpuid.size());
      std::memcpy(hdr + 1, cpuid.data(), cpuid.size() * sizeof(kvm_cpuid_entry2));
    } else if (request == kKvmGetMsrs || request == kKvmSetMsrs) {
      auto* hdr = static_cast<KvmMsrsHeader*>(arg);
      if (hdr->nmsrs >= 256) {  // KVM's MAX_IO_MSRS.
        errno = E2BIG;
        return -1;
      }
      auto* e = reinterpret_cast<kvm_msr_entry*>(hdr + 1);
      uint32_t n = 0;
      for (; n < hdr->nmsrs && !unreadable.count(e[n].index); n++) {
        if (request == kKvmSetMsrs) msrs_written.push_back(e[n]);
      }
      return static_cast<int>(n);
    } else if (request == KVM_GET_TSC_KHZ) {
      return static_cast<int>(tsc_khz);
    } else if (request == KVM_SET_TSC_KHZ) {
      tsc_set = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(arg));
    } else if (request == KVM_SET_CLOCK) {
      clock_set = *static_cast<kvm_clock_data*>(arg);
    }
    return 0;
  }

  std::vector<kvm_cpuid_entry2> cpuid{kvm_cpuid_entry2{0, 0, 0, 0xd, 1, 2, 3, {}}};
  std::set<uint32_t> unreadable;
  uint32_t tsc_khz = 2'000'000;
  uint32_t tsc_set = 0;
  kvm_clock_data clock_set{};
  std::vector<kvm_msr_entry> msrs_written;

 private:
  std::string tag_;
  std::vector<std::string>* log_;
};

KvmStateCaps host_caps() {
  KvmStateCaps c;
  c.xsave_bytes = 4096;
  c.host_tsc_khz = 2'000'000;
  c.clock_flags = KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC;
  return c;
}

VcpuState saved_state() {
  VcpuState s;
  s.cpuid = {kvm_cpuid_entry2{0, 0, 0, 0xd, 1, 2, 3, {}}};
  s.xsave.assign(4096, 0);
  s.tsc_khz = 2'000'000;
  s.msrs = {{0xc0000080, 0, 0x500}, {kMsrIa32TscDeadline, 0, 0}, {0x174, 0, 0x10}, {kMsrIa32Tsc, 0, 123456}};
  return s;
}

std::vector<std::string> indices(const std::vector<kvm_msr_entry>& e) {
  std::vector<std::string> out;
  for (const auto& m : e) {
    char text[16];
    std::snprintf(text, sizeof text, "0x%x", m.index);
    out.push_back(text);
  }
  return out;
}

TEST(KvmStateOrder, VcpuRestoreGoesCpuidRegistersLapicMsrsEvents) {
  std::vector<std::string> log;
  FakeKvm cpu("cpu", &log);
  ASSERT_TRUE(restore_vcpu_state(cpu, host_caps(), saved_state()));
  EXPECT_EQ(log, (std::vector<std::string>{"cpu:GET_CPUID2", "cpu:SET_MP_STATE", "cpu:SET_REGS", "cpu:SET_SREGS",
                                            "cpu:SET_XSAVE", "cpu:SET_XCRS", "cpu:SET_DEBUGREGS", "cpu:SET_LAPIC",
                                            "cpu:SET_MSRS", "cpu:SET_VCPU_EVENTS"}));
}

TEST(KvmStateOrder, TscIsWrittenFirstAndAZeroDeadlineNotAtAll) {
  std::vector<std::string> log;
  FakeKvm cpu("cpu", &log);
  ASSERT_TRUE(restore_vcpu_state(cpu, host_caps(), saved_state()));
  EXPECT_EQ(indices(cpu.msrs_written), (std::vector<std::string>{"0x10", "0xc0000080", "0x174"}));
}

TEST(KvmStateOrder, ANonZeroDeadlineIsWrittenAfterTheTsc) {
  std::vector<std::string> log;
  FakeKvm cpu("cpu", &log);
  auto s = saved_state();
  s.msrs[1].data = 999999;
  ASSERT_TRUE(restore_vcpu_state(cpu, host_caps(), s));
  EXPECT_EQ(indices(cpu.msrs_written), (std::vector<std::string>{"0x10", "0xc0000080", "0x174", "0x6e0"}));
}

// A Linux guest turns on CR4.OSXSAVE, its APIC and XCR0 components while it boots, and KVM
// mirrors them into CPUID leaves 1, 7 and 0xd: a vCPU set up afresh shows them clear. Those
// bits alone do not make another CPUID; any other bit of the same leaves does.
TEST(KvmStateOrder, CpuidBitsKvmRewritesAtRunTimeAreNotADifference) {
  std::vector<std::string> log;
  FakeKvm cpu("cpu", &log);
  cpu.cpuid = {kvm_cpuid_entry2{1, 0, 0, 0x306a9, 0x800, 0x80000000, 0x178bfbff, {}},
               kvm_cpuid_entry2{0xd, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 7, 0x240, 0x340, 0, {}}};
  auto s = saved_state();
  s.cpuid = cpu.cpuid;
  s.cpuid[0].ecx |= (1u << 27) | (1u << 3);  // OSXSAVE, MONITOR
  s.cpuid[0].edx |= 1u << 9;                  // APIC
  s.cpuid[1].ebx = 0x340;                      // the XSAVE size for the guest's XCR0
  ASSERT_TRUE(restore_vcpu_state(cpu, host_caps(), s));
  s.cpuid[0].ecx ^= 1u << 28;                  // AVX: a feature, not a run-time mirror
  auto r = restore_vcpu_state(cpu, host_caps(), s);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("the saved CPUID differs"), std::string::npos) << r.error().message;
}

TEST(KvmStateOrder, AnotherCpuidIsRefusedBeforeAnythingChanges) {
  std::vector<std::string> log;
  FakeKvm cpu("cpu", &log);
  auto s = saved_state();
  s.cpuid[0].ebx = 7;
  auto r = restore_vcpu_state(cpu, host_caps(), s);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("the saved CPUID differs"), std::string::npos) << r.error().message;
  EXPECT_EQ(log, std::vector<std::string>{"cpu:GET_CPUID2"});
}

TEST(KvmStateOrder, ATscFrequencyKvmCannotScaleIsRefusedWithoutAnIoctl) {
  std::vector<std::string> log;
  FakeKvm cpu("cpu", &log);
  auto s = saved_state();
  s.tsc_khz = 2'001'000;  // 500 ppm off: beyond KVM's 250.
  auto r = restore_vcpu_state(cpu, host_caps(), s);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("which KVM cannot scale here (no KVM_CAP_TSC_CONTROL)"), std::string::npos)
      << r.error().message;
  EXPECT_TRUE(log.empty());
}

TEST(KvmStateOrder, AScaledTscFrequencyIsSetBeforeAnyTscValue) {
  std::vector<std::string> log;
  FakeKvm cpu("cpu", &log);
  auto caps = host_caps();
  caps.tsc_control = true;
  auto s = saved_state();
  s.tsc_khz = 3'000'000;
  ASSERT_TRUE(restore_vcpu_state(cpu, caps, s));
  ASSERT_GE(log.size(), 3u);
  EXPECT_EQ(log[1], "cpu:SET_TSC_KHZ");
  EXPECT_EQ(cpu.tsc_set, 3'000'000u);
}

TEST(KvmStateOrder, AFrequencyWithinKvmsToleranceIsNotSet) {
  std::vector<std::string> log;
  FakeKvm cpu("cpu", &log);
  auto s = saved_state();
  s.tsc_khz = 2'000'400;  // 200 ppm.
  ASSERT_TRUE(restore_vcpu_state(cpu, host_caps(), s));
  for (const auto& l : log) EXPECT_NE(l, "cpu:SET_TSC_KHZ");
}

TEST(KvmStateOrder, AnXsaveAreaLargerThanTheHostsIsRefused) {
  std::vector<std::string> log;
  FakeKvm cpu("cpu", &log);
  auto s = saved_state();
  s.xsave.assign(8192, 0);
  auto r = restore_vcpu_state(cpu, host_caps(), s);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("the saved XSAVE area is 8192 bytes and this host's KVM holds 4096"), std::string::npos);
  EXPECT_TRUE(log.empty());
}

TEST(KvmStateOrder, TheVmsIrqchipAndClockFollowEveryVcpu) {
  std::vector<std::string> log;
  FakeKvm cpu0("cpu0", &log), cpu1("cpu1", &log), vm("vm", &log);
  VmState v;
  v.clock.clock = 5'000'000'000;
  v.clock.flags = KVM_CLOCK_TSC_STABLE;
  ASSERT_TRUE(restore_machine_state({&cpu0, &cpu1}, vm, host_caps(), {saved_state(), saved_state()}, v, false));
  std::vector<std::string> tail(log.end() - 6, log.end());
  EXPECT_EQ(tail, (std::vector<std::string>{"cpu1:SET_VCPU_EVENTS", "vm:SET_PIT2", "vm:SET_IRQCHIP", "vm:SET_IRQCHIP",
                                             "vm:SET_IRQCHIP", "vm:SET_CLOCK"}));
  EXPECT_EQ(log.front(), "cpu0:GET_CPUID2");
  // The clock continues from the saved value; KVM is given no flag it would act on.
  EXPECT_EQ(vm.clock_set.clock, 5'000'000'000u);
  EXPECT_EQ(vm.clock_set.flags, 0u);
}

TEST(KvmStateOrder, RealtimeIsPassedOnlyWhenAsked) {
  std::vector<std::string> log;
  FakeKvm cpu("cpu", &log), vm("vm", &log);
  VmState v;
  v.clock.clock = 7;
  v.clock.realtime = 1'700'000'000'000'000'000ull;
  v.clock.flags = KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC;
  ASSERT_TRUE(restore_machine_state({&cpu}, vm, host_caps(), {saved_state()}, v, true));
  EXPECT_EQ(vm.clock_set.flags, static_cast<uint32_t>(KVM_CLOCK_REALTIME));
  EXPECT_EQ(vm.clock_set.realtime, v.clock.realtime);
}

TEST(KvmStateOrder, RealtimeWithoutASavedWallClockIsRefusedBeforeAnyVcpuChanges) {
  std::vector<std::string> log;
  FakeKvm cpu("cpu", &log), vm("vm", &log);
  VmState v;
  auto r = restore_machine_state({&cpu}, vm, host_caps(), {saved_state()}, v, true);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("the saved clock holds no wall-clock time"), std::string::npos);
  EXPECT_TRUE(log.empty());
}

TEST(KvmStateOrder, OneUnfitVcpuStopsTheWholeRestoreBeforeAnyChange) {
  std::vector<std::string> log;
  FakeKvm cpu0("cpu0", &log), cpu1("cpu1", &log), vm("vm", &log);
  auto bad = saved_state();
  bad.tsc_khz = 1'000'000;
  auto r = restore_machine_state({&cpu0, &cpu1}, vm, host_caps(), {saved_state(), bad}, VmState{}, false);
  ASSERT_FALSE(r);
  EXPECT_TRUE(log.empty());
  EXPECT_FALSE(restore_machine_state({&cpu0}, vm, host_caps(), {saved_state(), saved_state()}, VmState{}, false));
}

TEST(KvmStateSave, MpStateIsReadFirstAndXsave2UsedWhereTheHostHasIt) {
  std::vector<std::string> log;
  FakeKvm cpu("cpu", &log);
  auto caps = host_caps();
  caps.xsave2 = true;
  caps.xsave_bytes = 8192;
  auto s = save_vcpu_state(cpu, caps, {kMsrIa32Tsc, 0x174});
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(log, (std::vector<std::string>{"cpu:GET_CPUID2", "cpu:GET_MP_STATE", "cpu:GET_REGS", "cpu:GET_SREGS",
                                            "cpu:GET_XSAVE2", "cpu:GET_XCRS", "cpu:GET_DEBUGREGS", "cpu:GET_LAPIC",
                                            "cpu:GET_MSRS", "cpu:GET_VCPU_EVENTS", "cpu:GET_TSC_KHZ"}));
  EXPECT_EQ(s->xsave.size(), 8192u);
  EXPECT_EQ(s->msrs.size(), 2u);
  EXPECT_EQ(s->tsc_khz, 2'000'000u);
  EXPECT_EQ(s->cpuid.size(), 1u);
}

TEST(KvmStateSave, MoreMsrsThanOneIoctlTakesGoInBatches) {
  std::vector<std::string> log;
  FakeKvm cpu("cpu", &log);
  std::vector<uint32_t> many;
  for (uint32_t i = 0; i < 600; i++) many.push_back(0x1000 + i);
  auto s = save_vcpu_state(cpu, host_caps(), many);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->msrs.size(), 600u);
  EXPECT_EQ(std::count(log.begin(), log.end(), "cpu:GET_MSRS"), 3);
  log.clear();
  ASSERT_TRUE(restore_vcpu_state(cpu, host_caps(), *s));
  EXPECT_EQ(std::count(log.begin(), log.end(), "cpu:SET_MSRS"), 3);
  EXPECT_EQ(cpu.msrs_written.size(), 600u);
}

TEST(KvmStateSave, AnMsrThatBecameUnreadableFailsTheSaveNamingIt) {
  std::vector<std::string> log;
  FakeKvm cpu("cpu", &log);
  cpu.unreadable = {0x174};
  auto s = save_vcpu_state(cpu, host_caps(), {kMsrIa32Tsc, 0x174});
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("MSR 0x174"), std::string::npos) << s.error().message;
}

TEST(KvmStateSave, SaveableMsrsLeaveOutMcgCtlAndWhatTheVcpuCannotRead) {
  std::vector<std::string> log;
  FakeKvm cpu("cpu", &log);
  cpu.unreadable = {0x3a};
  auto m = kvm_saveable_msrs(cpu, {kMsrIa32Tsc, kMsrIa32McgCtl, 0x3a, kMsrIa32TscDeadline});
  ASSERT_TRUE(m);
  EXPECT_EQ(*m, (std::vector<uint32_t>{kMsrIa32Tsc, kMsrIa32TscDeadline}));
}

TEST(KvmStateSave, VmStateReadsEachIrqchipByItsId) {
  std::vector<std::string> log;
  FakeKvm vm("vm", &log);
  auto s = save_vm_state(vm);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->pic_master.chip_id, static_cast<uint32_t>(KVM_IRQCHIP_PIC_MASTER));
  EXPECT_EQ(s->pic_slave.chip_id, static_cast<uint32_t>(KVM_IRQCHIP_PIC_SLAVE));
  EXPECT_EQ(s->ioapic.chip_id, static_cast<uint32_t>(KVM_IRQCHIP_IOAPIC));
  EXPECT_EQ(log, (std::vector<std::string>{"vm:GET_PIT2", "vm:GET_IRQCHIP", "vm:GET_IRQCHIP", "vm:GET_IRQCHIP",
                                            "vm:GET_CLOCK"}));
}

}  // namespace
}  // namespace moss
