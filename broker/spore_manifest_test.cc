// The broker's manifest functions (broker/spore_manifest.h), pure: a manifest built from a
// machine state and turned back into one, the host-contract checks against fake CPUID tables,
// and the disks a restore is given against the ones recorded.
#include "broker/spore_manifest.h"

#include <gtest/gtest.h>

#include <capnp/message.h>

#include <cstring>

#include "devices/blk/module.h"

namespace moss::sporemf {
namespace {

kvm_cpuid_entry2 leaf(uint32_t function, uint32_t index, uint32_t eax, uint32_t ebx, uint32_t ecx, uint32_t edx,
                      uint32_t flags = 0) {
  kvm_cpuid_entry2 e{};
  e.function = function;
  e.index = index;
  e.flags = flags;
  e.eax = eax;
  e.ebx = ebx;
  e.ecx = ecx;
  e.edx = edx;
  return e;
}

std::vector<uint8_t> bytes_of(const std::vector<kvm_cpuid_entry2>& t) {
  std::vector<uint8_t> b(t.size() * sizeof(kvm_cpuid_entry2));
  std::memcpy(b.data(), t.data(), b.size());
  return b;
}

capnp::Data::Reader as_data(const std::vector<uint8_t>& v) { return capnp::Data::Reader(v.data(), v.size()); }

// A machine state as the vcpu process sends it: `cpus` vCPUs whose CPUID is `cpuid`, and a
// transport and backend blob per device.
void fill_state(ipc::MachineState::Builder s, unsigned cpus, const std::vector<uint8_t>& cpuid, unsigned devices) {
  auto list = s.initCpus(cpus);
  for (unsigned i = 0; i < cpus; i++) {
    list[i].setMpState(i);
    list[i].setCpuid(as_data(cpuid));
    list[i].setTscKhz(2'500'000);
    list[i].setVersion(1);
  }
  s.initVm().setVersion(1);
  static const std::vector<uint8_t> uart{1, 0, 0, 0, 0xaa}, kbd{1, 0, 0, 0, 0xbb};
  s.setUart(as_data(uart));
  s.setI8042(as_data(kbd));
  auto devs = s.initDevices(devices);
  for (unsigned i = 0; i < devices; i++) {
    std::vector<uint8_t> t{static_cast<uint8_t>(i + 3), 0, 0, 0, 0x11}, b{2, 0, 0, 0, static_cast<uint8_t>(0x20 + i)};
    devs[i].setTransport(as_data(t));
    devs[i].setBackend(as_data(b));
  }
}

MachineFacts facts(unsigned cpus, std::vector<DeviceRecord> devices) {
  MachineFacts f;
  f.arch = "x86_64";
  f.kvm_caps = required_kvm_caps();
  f.mem_bytes = 5ull << 30;  // Splits around the PCI hole.
  f.cpus = cpus;
  f.cmdline = "console=ttyS0 quiet";
  f.devices = std::move(devices);
  f.generation = 4;
  f.vsock_cid = 77;
  f.name = "dev";
  return f;
}

TEST(SporeManifest, RamRangesAreTheBootMemoryMap) {
  auto small = ram_ranges(64ull << 20);
  ASSERT_EQ(small.size(), 1u);
  EXPECT_EQ(small[0].bytes, 64ull << 20);
  auto big = ram_ranges(5ull << 30);
  ASSERT_EQ(big.size(), 2u);
  EXPECT_EQ(big[0].guest_addr, 0u);
  EXPECT_EQ(big[0].bytes, 3ull << 30);
  EXPECT_EQ(big[1].guest_addr, 4ull << 30);
  EXPECT_EQ(big[1].bytes, 2ull << 30);
  EXPECT_EQ(big[1].file_offset, 3ull << 30);  // High RAM follows low RAM in the memfd.
}

TEST(SporeManifest, BuildRecordsEverythingAndRestoreGetsItBack) {
  auto cpuid = bytes_of({leaf(0, 0, 0xd, 0, 0, 0), leaf(1, 0, 0, 0, 0x1, 0x2)});
  capnp::MallocMessageBuilder state_msg;
  fill_state(state_msg.initRoot<ipc::MachineState>(), 2, cpuid, 2);
  std::vector<uint8_t> disk = device::blk::encode_disk_record({1 << 20, 5, 6, false});
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<spore::Manifest>();
  auto built = build(m, state_msg.getRoot<ipc::MachineState>().asReader(), facts(2, {{"blk", disk}, {"vsock", {}}}));
  ASSERT_TRUE(built.ok()) << built.error().message;
  auto r = m.asReader();
  EXPECT_EQ(r.getHost().getArch(), "x86_64");
  EXPECT_EQ(r.getHost().getCpuid().size(), cpuid.size());
  EXPECT_EQ(r.getHost().getTscKhz(), 2'500'000u);
  EXPECT_EQ(r.getHost().getKvmCapabilities().size(), required_kvm_caps().size());
  EXPECT_EQ(r.getMachine().getCpus(), 2u);
  EXPECT_EQ(r.getMachine().getCmdline(), "console=ttyS0 quiet");
  ASSERT_EQ(r.getMachine().getRamRanges().size(), 2u);
  EXPECT_EQ(r.getMachine().getRamRanges()[1].getGuestAddr(), 4ull << 30);
  ASSERT_EQ(r.getMachine().getDevices().size(), 2u);
  EXPECT_EQ(r.getMachine().getDevices()[0].getKind(), "blk");
  EXPECT_EQ(r.getMachine().getDevices()[0].getConfig().size(), disk.size());
  EXPECT_EQ(r.getMachine().getDevices()[1].getKind(), "vsock");
  ASSERT_EQ(r.getDeviceModels().size(), 4u);
  EXPECT_EQ(r.getDeviceModels()[0].getName(), kUartModel);
  EXPECT_EQ(r.getDeviceModels()[1].getName(), kI8042Model);
  EXPECT_EQ(r.getDeviceModels()[3].getName(), "virtio-pci-1");
  EXPECT_EQ(r.getDeviceModels()[3].getVersion(), 4u);  // The blob's own leading u32.
  ASSERT_EQ(r.getWorkers().size(), 2u);
  EXPECT_EQ(r.getWorkers()[1].getKind(), "vsock");
  EXPECT_EQ(r.getWorkers()[1].getVersion(), 2u);
  EXPECT_EQ(r.getIdentity().getGeneration(), 4u);
  EXPECT_EQ(r.getIdentity().getVsockCid(), 77u);
  EXPECT_EQ(r.getIdentity().getName(), "dev");
  auto bytes = ram_bytes_of(r);
  ASSERT_TRUE(bytes.ok()) << bytes.error().message;
  EXPECT_EQ(*bytes, 5ull << 30);

  capnp::MallocMessageBuilder back;
  auto s = back.initRoot<ipc::MachineState>();
  ASSERT_TRUE(machine_state_of(r, s).ok());
  ASSERT_EQ(s.getCpus().size(), 2u);
  EXPECT_EQ(s.getCpus()[1].getMpState(), 1u);
  EXPECT_EQ(s.getUart()[4], 0xaa);
  EXPECT_EQ(s.getI8042()[4], 0xbb);
  ASSERT_EQ(s.getDevices().size(), 2u);
  EXPECT_EQ(s.getDevices()[1].getTransport()[0], 4);
  EXPECT_EQ(s.getDevices()[1].getBackend()[4], 0x21);
}

TEST(SporeManifest, BuildRefusesAStateOfAnotherShape) {
  auto cpuid = bytes_of({leaf(1, 0, 0, 0, 0, 0)});
  capnp::MallocMessageBuilder state_msg;
  fill_state(state_msg.initRoot<ipc::MachineState>(), 1, cpuid, 1);
  capnp::MallocMessageBuilder mb;
  auto r = build(mb.initRoot<spore::Manifest>(), state_msg.getRoot<ipc::MachineState>().asReader(), facts(2, {{"vsock", {}}}));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "the vcpu process saved 1 vCPUs of a machine with 2");
  capnp::MallocMessageBuilder mb2;
  r = build(mb2.initRoot<spore::Manifest>(), state_msg.getRoot<ipc::MachineState>().asReader(),
            facts(1, {{"blk", {}}, {"vsock", {}}}));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "the vcpu process saved 1 devices of a machine with 2");
}

TEST(SporeManifest, RestoreRefusesAManifestMissingAPart) {
  auto cpuid = bytes_of({leaf(1, 0, 0, 0, 0, 0)});
  capnp::MallocMessageBuilder state_msg;
  fill_state(state_msg.initRoot<ipc::MachineState>(), 1, cpuid, 1);
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<spore::Manifest>();
  ASSERT_TRUE(build(m, state_msg.getRoot<ipc::MachineState>().asReader(), facts(1, {{"vsock", {}}})).ok());
  m.getDeviceModels()[2].setName("virtio-pci-9");
  capnp::MallocMessageBuilder out;
  auto r = machine_state_of(m.asReader(), out.initRoot<ipc::MachineState>());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "the spore holds no state of its virtio-pci-0");
  m.getWorkers()[0].setKind("blk");
  m.getDeviceModels()[2].setName("virtio-pci-0");
  capnp::MallocMessageBuilder out2;
  r = machine_state_of(m.asReader(), out2.initRoot<ipc::MachineState>());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("is of a blk device, its device 0 a vsock"), std::string::npos) << r.error().message;
  m.getMachine().setCpus(3);
  capnp::MallocMessageBuilder out3;
  EXPECT_EQ(machine_state_of(m.asReader(), out3.initRoot<ipc::MachineState>()).error().message,
            "the spore holds 1 vCPU states for a machine of 3");
  m.getMachine().getRamRanges()[0].setBytes(1 << 20);
  m.getMachine().getRamRanges()[1].setBytes(0);
  EXPECT_EQ(ram_bytes_of(m.asReader()).error().message, "the spore's RAM is smaller than any machine moss makes");
  m.getMachine().getRamRanges()[0].setGuestAddr(1 << 20);
  m.getMachine().getRamRanges()[0].setBytes(1 << 30);
  EXPECT_EQ(ram_bytes_of(m.asReader()).error().message, "the spore's RAM layout is not one this moss makes");
}

// A host contract for the checks below: leaf 1 with SSE3 (ECX 0) and the hypervisor bit (ECX
// 31), leaf 7.0 with a feature in EBX, leaf 7.1.
struct Contract {
  capnp::MallocMessageBuilder mb;
  spore::HostContract::Builder c = mb.initRoot<spore::HostContract>();
  std::vector<uint8_t> cpuid;
  Contract(uint32_t leaf7_ebx = 1u << 5) {
    cpuid = bytes_of({leaf(0, 0, 7, 0, 0, 0), leaf(1, 0, 0, 0x01020304, (1u << 0) | (1u << 31) | (1u << 27), 1u << 28),
                      leaf(7, 0, 1, leaf7_ebx, 0, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX),
                      leaf(7, 1, 0, 0, 0, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX)});
    c.setArch("x86_64");
    c.setCpuid(as_data(cpuid));
    auto caps = c.initKvmCapabilities(2);
    caps.set(0, KVM_CAP_IRQCHIP);
    caps.set(1, KVM_CAP_XSAVE);
    c.setTscKhz(2'000'000);
  }
};

HostFacts host(uint32_t leaf7_ebx = 1u << 5) {
  HostFacts h;
  h.arch = "x86_64";
  // The host offers SSE3 but neither the hypervisor, OSXSAVE nor HTT bits: moss and the guest
  // set those, so they are not asked of it.
  h.supported_cpuid = {leaf(0, 0, 0xd, 0, 0, 0), leaf(1, 0, 0, 0, 1u << 0, 0),
                       leaf(7, 0, 1, leaf7_ebx, 0, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX),
                       leaf(7, 1, 0, 0, 0, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX)};
  h.kvm_caps = {KVM_CAP_XSAVE, KVM_CAP_IRQCHIP};
  h.tsc_khz = 2'000'000;
  return h;
}

TEST(HostContract, ThisHostAcceptsItsOwnSpore) {
  Contract c;
  auto r = check_host(c.c.asReader(), host());
  EXPECT_TRUE(r.ok()) << r.error().message;
}

TEST(HostContract, AMissingCpuFeatureIsNamedByLeafRegisterAndBit) {
  Contract c((1u << 5) | (1u << 9));
  auto r = check_host(c.c.asReader(), host());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message,
            "this host's KVM does not offer the CPU feature the spore's guest was given at CPUID leaf 0x7.0 EBX bit 9; "
            "restore it on a host with that CPU feature");
  // Leaf 7's subleaf 1 is another leaf: a bit there is not found in subleaf 0.
  HostFacts h = host((1u << 5) | (1u << 9));
  EXPECT_TRUE(check_host(c.c.asReader(), h).ok());
  // A feature KVM shows a vCPU (PVM) though it does not list it as supported counts.
  HostFacts shown = host();
  shown.vcpu_cpuid = {leaf(7, 0, 1, 1u << 9, 0, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX)};
  EXPECT_TRUE(check_host(c.c.asReader(), shown).ok());
  // A host without the leaf at all.
  HostFacts no7 = host();
  no7.supported_cpuid.resize(2);
  EXPECT_NE(check_host(c.c.asReader(), no7).error().message.find("leaf 0x7.0 EBX bit 5"), std::string::npos);
}

TEST(HostContract, ArchCapsTscAndAMalformedTableAreRefused) {
  Contract c;
  HostFacts arm = host();
  arm.arch = "aarch64";
  EXPECT_EQ(check_host(c.c.asReader(), arm).error().message, "the spore was made on a x86_64 host and this one is aarch64");
  HostFacts nocap = host();
  nocap.kvm_caps = {KVM_CAP_IRQCHIP};
  EXPECT_EQ(check_host(c.c.asReader(), nocap).error().message,
            "this host's KVM lacks capability " + std::to_string(KVM_CAP_XSAVE) + " (KVM_CAP_*), which the spore needs");
  HostFacts slow = host();
  slow.tsc_khz = 1'800'000;
  EXPECT_EQ(check_host(c.c.asReader(), slow).error().message,
            "the spore's guest ran its TSC at 2000000 kHz, this host's runs at 1800000 kHz, and its KVM cannot scale it "
            "(no KVM_CAP_TSC_CONTROL)");
  slow.tsc_scaling = true;
  EXPECT_TRUE(check_host(c.c.asReader(), slow).ok());
  c.c.setCpuid(as_data(std::vector<uint8_t>(41)));
  EXPECT_EQ(check_host(c.c.asReader(), host()).error().message, "the spore's CPUID table is 41 bytes, not whole entries");
  c.c.setCpuid(as_data({}));
  EXPECT_EQ(check_host(c.c.asReader(), host()).error().message, "the spore records no CPUID of its guest");
}

TEST(DiskRecord, RoundTripsAndRefusesOtherBytes) {
  device::blk::DiskRecord r{123456789, 0x1122334455667788, 0x99aabbccddeeff00, true};
  auto b = device::blk::encode_disk_record(r);
  ASSERT_EQ(b.size(), device::blk::kDiskRecordBytes);
  auto back = device::blk::decode_disk_record(b);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, r);
  auto cut = b;
  cut.pop_back();
  EXPECT_EQ(device::blk::decode_disk_record(cut).error().message, "the spore's record of a disk is 31 bytes, not 32");
  auto v2 = b;
  v2[0] = 2;
  EXPECT_EQ(device::blk::decode_disk_record(v2).error().message,
            "the spore's record of a disk has version 2, which this moss does not know");
  auto flags = b;
  flags[4] = 3;
  EXPECT_EQ(device::blk::decode_disk_record(flags).error().message, "the spore's record of a disk has unknown flags");
}

TEST(RestoreDevices, TheDisksMustBeTheRecordedOnesInOrder) {
  using device::blk::encode_disk_record;
  capnp::MallocMessageBuilder mb;
  auto devs = mb.initRoot<spore::MachineConfig>().initDevices(3);
  auto a = encode_disk_record({1 << 20, 1, 2, false}), b = encode_disk_record({2 << 20, 3, 4, true});
  devs[0].setKind("blk");
  devs[0].setConfig(as_data(a));
  devs[1].setKind("blk");
  devs[1].setConfig(as_data(b));
  devs[2].setKind("vsock");
  auto recorded = devs.asReader();
  EXPECT_TRUE(check_devices(recorded, {{"blk", a}, {"blk", b}, {"vsock", {}}}).ok());
  EXPECT_EQ(check_devices(recorded, {{"blk", a}, {"vsock", {}}}).error().message,
            "the spore's VM had 2 disks and 1 was given; give each of its disks with --disk, in its order");
  EXPECT_EQ(check_devices(recorded, {{"blk", b}, {"blk", a}, {"vsock", {}}}).error().message,
            "disk 1 is 2097152 bytes and the spore's disk was 1048576; give the disk the spore was made with");
  auto changed = encode_disk_record({1 << 20, 1, 9, false});
  EXPECT_EQ(check_devices(recorded, {{"blk", changed}, {"blk", b}, {"vsock", {}}}).error().message,
            "disk 1 is not the disk the spore was made with (its first and last MiB differ); give that disk, unchanged "
            "since the suspend");
  auto rw = encode_disk_record({2 << 20, 3, 4, false});
  EXPECT_EQ(check_devices(recorded, {{"blk", a}, {"blk", rw}, {"vsock", {}}}).error().message,
            "disk 2 was read-only when the spore was made; give it with ,ro");
  EXPECT_EQ(check_devices(recorded, {{"blk", a}, {"blk", b}, {"null", {}}}).error().message,
            "the spore's device 3 is a vsock device and this VM's a null device");
  // A disk given as an external backend records nothing, and cannot stand for a recorded one.
  EXPECT_EQ(check_devices(recorded, {{"blk", a}, {"blk", {}}, {"vsock", {}}}).error().message,
            "disk 2 is given as a vhost-user backend, which cannot be checked against the spore; give each disk with "
            "--disk");
  // A recorded disk whose record is corrupt is refused with the decoder's sentence.
  devs[0].setConfig(as_data(std::vector<uint8_t>(5)));
  EXPECT_EQ(check_devices(devs.asReader(), {{"blk", a}, {"blk", b}, {"vsock", {}}}).error().message,
            "the spore's record of a disk is 5 bytes, not 32");
}

// No kind is special to these checks: each kind's module counts, names and compares its own.
TEST(RestoreDevices, EveryKindIsCountedAndCheckedByItsModule) {
  capnp::MallocMessageBuilder mb;
  auto devs = mb.initRoot<spore::MachineConfig>().initDevices(3);
  devs[0].setKind("null");
  devs[1].setKind("null");
  devs[2].setKind("vsock");
  auto recorded = devs.asReader();
  EXPECT_TRUE(check_devices(recorded, {{"null", {}}, {"null", {}}, {"vsock", {}}}).ok());
  EXPECT_EQ(check_devices(recorded, {{"null", {}}, {"vsock", {}}}).error().message,
            "the spore's VM had 2 null devices and 1 was given; give each of its null devices with --device null, in its "
            "order");
  // A kind's record is compared by its module; by default, byte for byte.
  EXPECT_EQ(check_devices(recorded, {{"null", {}}, {"null", {1}}, {"vsock", {}}}).error().message,
            "null device 2 is not the one the spore was made with; give that one, with the options it had");
  devs[1].setKind("gpu");
  EXPECT_EQ(check_devices(devs.asReader(), {{"null", {}}, {"null", {}}, {"vsock", {}}}).error().message,
            "the spore's VM had a device of kind 'gpu', which this moss does not know");
}

}  // namespace
}  // namespace moss::sporemf
