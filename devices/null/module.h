// The null device's module (devices/module.h): a test device, added with
// `moss run --device null,capacity=BYTES[,num-queues=N]`. Its worker, moss-null, is a
// virtio-blk backend that answers every request OK without touching a disk (for benches and
// for proving that a device is added by its folder alone). Linked by the broker; not the
// worker.
#pragma once

#include <cstdint>
#include <string_view>

#include "base/result.h"
#include "devices/module.h"

namespace moss::device::null {

struct Options {
  uint64_t capacity = 0;    // Bytes the guest's disk claims to have (a multiple of 512).
  uint16_t num_queues = 0;  // 0: one per vCPU.
};

// "capacity=BYTES[,num-queues=N]"; a one-sentence error for anything else.
Result<Options> parse(std::string_view text);
Result<Device> plan(const Options& options, const Vm& vm);

// moss-null serving `queues` queues.
sandbox::Limits limits(uint32_t queues);

const Module& module();

}  // namespace moss::device::null
