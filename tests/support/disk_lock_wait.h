// For tests that start disk backends one after another on one image: waits until nobody holds
// a lock on it (base/disk_lock.h). A backend that just exited can hold its lock a little
// longer: its io_uring is torn down after the process, and with it the last reference to the
// open file.
#pragma once

#include <chrono>
#include <string>

namespace moss::test {

// True once no process holds a lock on `path`; false if `limit` passed first, or the file
// cannot be opened or asked.
bool wait_until_disk_unlocked(const std::string& path, std::chrono::milliseconds limit);

}  // namespace moss::test
