// Manifests and guest RAM for store tests and the fuzz targets' seeds: a small VM whose
// manifest fields hold recognisable values.
#pragma once

#include <capnp/message.h>

#include <cstdint>
#include <random>
#include <vector>

#include "store/spore.capnp.h"

namespace moss::store::testing {

// Fills everything a writer fills except memory (write_spore does that) for one RAM range
// [0, ram_bytes) and `cpus` vCPUs.
inline void fill_manifest(spore::Manifest::Builder m, uint64_t ram_bytes, uint32_t cpus = 2) {
  auto host = m.initHost();
  host.setArch("x86_64");
  host.setCpuid(capnp::Data::Reader(reinterpret_cast<const uint8_t*>("\x01\x00\x00\x00"), 4));
  auto caps = host.initKvmCapabilities(2);
  caps.set(0, 9);   // KVM_CAP_USER_MEMORY
  caps.set(1, 36);  // KVM_CAP_IRQCHIP... as a number only
  host.setTscKhz(2'000'000);
  auto machine = m.initMachine();
  auto ram = machine.initRamRanges(1);
  ram[0].setGuestAddr(0);
  ram[0].setBytes(ram_bytes);
  machine.setCpus(cpus);
  machine.setCmdline("console=ttyS0");
  auto devices = machine.initDevices(1);
  devices[0].setKind("blk");
  auto vcpus = m.initVcpus(cpus);
  for (uint32_t i = 0; i < cpus; ++i) vcpus[i].setMpState(i);
  auto workers = m.initWorkers(1);
  workers[0].setKind("blk");
  workers[0].setVersion(1);
  auto id = m.initIdentity();
  id.setGeneration(7);
  id.setVsockCid(42);
  id.setName("dev");
}

// Guest RAM like a booted guest's: zero runs, repeated text, random pages.
inline std::vector<uint8_t> fake_ram(size_t bytes, uint64_t seed) {
  std::vector<uint8_t> ram(bytes, 0);
  std::mt19937_64 rng(seed);
  for (size_t page = 0; page < bytes / 4096; ++page) {
    unsigned kind = rng() % 3;
    uint8_t* p = ram.data() + page * 4096;
    if (kind == 1) {
      for (size_t i = 0; i < 4096; ++i) p[i] = "moss spore text "[i % 16];
    } else if (kind == 2) {
      for (size_t i = 0; i < 4096; ++i) p[i] = static_cast<uint8_t>(rng());
    }
  }
  return ram;
}

}  // namespace moss::store::testing
