/* Entry of the virtio-blk test guest (the driver is virtio_blk.c): the usual 64-bit entry,
   and under a firmware loader (QEMU's -kernel) its own way into long mode. */
#define GUEST_FIRMWARE_ENTRY
#include "guest.h"
BZIMAGE_HEADER
KERNEL_ENTRY
