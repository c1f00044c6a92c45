// moss-blk on the worker runtime (devices/worker/): the WorkerSpec of one disk, which makes a
// BlkDevice for every frontend over the same Disk and Engine, describes the disk to the broker
// and fdatasyncs it on shutdown.
#pragma once

#include <memory>
#include <string>

#include "devices/blk/device.h"
#include "devices/blk/disk.h"
#include "devices/blk/engine.h"
#include "devices/worker/device.h"

namespace moss::blk {

// `disk_name` is what describe reports (the path, or how the fd was named).
runtime::WorkerSpec worker_spec(std::shared_ptr<const Disk> disk, std::shared_ptr<Engine> engine,
                                DeviceOptions options, std::string disk_name);

}  // namespace moss::blk
