// A null virtio-blk backend for the bench's transport-only row: moss's vhost-user Backend and
// device-side virtqueue, with every request parsed (blk::parse_request) and answered OK at
// once, and no disk I/O and no data copied. Beside qemu-storage-daemon's null-co export it
// measures what each vhost-user stack costs per request.
//
// Single-threaded: one frontend at a time, served until it disconnects, then the next.
#pragma once

namespace moss::bench {

// Serves frontends that connect to `listen_fd` until SIGTERM. Returns the process exit status.
int serve_null_blk(int listen_fd, unsigned long long capacity_bytes);

}  // namespace moss::bench
