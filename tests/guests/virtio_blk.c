/* A minimal virtio-blk driver over virtio-pci modern (virtio 1.x, §4.1), as a freestanding
 * test guest: one 4 KiB read, one 4 KiB write, a flush, and a read-back, each checked.
 *
 * Disk contract (the test that runs this guest writes the image, then checks it):
 *   - at least 16 sectors of 512 bytes;
 *   - sectors 0..7 hold pattern A: the little-endian 32-bit word at byte offset o
 *     (o = 0, 4, ..., 4092) is o * 0x9e3779b1 + 0x6d6f7373 (mod 2^32);
 *   - the guest writes pattern B to sectors 8..15: the word at byte offset o
 *     (o = 4096, ..., 8188) is o * 0x9e3779b1 + 0x77726974; nothing else is written.
 * Built with -DVIRTIO_BLK_NULL_CONTRACT (the guest virtio_blk_null), the contract is instead
 * that of moss-null (devices/null/), a disk that keeps nothing:
 *   - at least 16 sectors, and FLUSH offered;
 *   - sectors 0..7 read as zeros; the write of pattern B to sectors 8..15 and the flush
 *     complete with VIRTIO_BLK_S_OK; sectors 8..15 then still read as zeros.
 * Built with -DVIRTIO_BLK_LOOP (the guest virtio_blk_loop), it then keeps doing I/O for the
 * suspend tests: LOOP_ROUNDS rounds, round i writing 4 KiB of pattern C (the word at byte
 * offset o is o * 0x9e3779b1 + 0x6c6f6f70) to sectors 16 + 8i..23 + 8i, reading it back and
 * printing "virtio-blk-guest: round i", about 20 ms apart; then it reads every round's sectors
 * again. The disk then needs at least 16 + 8 * LOOP_ROUNDS sectors.
 * Every completion must be the one request submitted: a used element beyond it (a request
 * done twice) fails the guest.
 * On success the last console line is "virtio-blk-guest: ok" and the status is 0; every failed
 * step prints "virtio-blk-guest: FAIL ..." and returns its own status (enum step below).
 *
 * Polls the used ring: no interrupts, MSI-X left disabled. Runs on PVM, where every guest
 * kernel instruction is emulated and every port or MMIO access exits to the VMM: config
 * space is read in 32-bit accesses only, and the loops are short. Every MMIO access has the
 * width of its field (§4.1.3.1: the device may reject other widths). */
#include <stddef.h>
#include <stdint.h>

enum step {
  kOk = 0,
  kNoDevice = 1,        /* no 1af4:1042 on bus 0 */
  kNoCapability = 2,    /* a common/notify/ISR/device-config capability is missing or short */
  kBadBar = 3,          /* a capability names an I/O BAR, or no BAR space could be assigned */
  kResetStuck = 4,      /* device_status did not read 0 after the reset */
  kNoVersion1 = 5,      /* VIRTIO_F_VERSION_1 not offered */
  kFeaturesRejected = 6,/* FEATURES_OK did not stick */
  kNoQueue = 7,         /* queue 0 has size 0 or is already enabled */
  kTooSmall = 8,        /* capacity below 16 sectors */
  kReadFailed = 9,      /* the read of sectors 0..7 timed out or did not return VIRTIO_BLK_S_OK */
  kReadMismatch = 10,   /* sectors 0..7 do not hold pattern A */
  kWriteFailed = 11,    /* the write of sectors 8..15 */
  kFlushFailed = 12,    /* the flush */
  kReadBackFailed = 13, /* the read of sectors 8..15 */
  kReadBackMismatch = 14,
  kDeviceNeedsReset = 15, /* DEVICE_NEEDS_RESET or a used element we did not submit */
  kNoFlush = 16,        /* the null contract: FLUSH not offered */
  kLoopFailed = 17,     /* a round of the loop build failed */
};

#define LOOP_ROUNDS 48
#define PATTERN_C 0x6c6f6f70u /* "loop" */

/* ---- port I/O, MMIO, console ------------------------------------------------------------ */

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) {
  uint8_t v;
  __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint32_t inl(uint16_t port) {
  uint32_t v;
  __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
/* PIT ticks since the entry (guest.h): real time, however slowly this code runs. */
extern uint64_t pit_now(void);
#define PIT_HZ 1193182u
#define barrier() __asm__ volatile("" : : : "memory")

static inline uint8_t mmio_read8(uint64_t a) { return *(volatile uint8_t*)a; }
static inline uint16_t mmio_read16(uint64_t a) { return *(volatile uint16_t*)a; }
static inline uint32_t mmio_read32(uint64_t a) { return *(volatile uint32_t*)a; }
static inline void mmio_write8(uint64_t a, uint8_t v) { *(volatile uint8_t*)a = v; }
static inline void mmio_write16(uint64_t a, uint16_t v) { *(volatile uint16_t*)a = v; }
static inline void mmio_write32(uint64_t a, uint32_t v) { *(volatile uint32_t*)a = v; }
/* 64-bit fields of the common configuration as two 32-bit writes, low half first (§4.1.3.1). */
static inline void mmio_write64(uint64_t a, uint64_t v) {
  mmio_write32(a, (uint32_t)v);
  mmio_write32(a + 4, (uint32_t)(v >> 32));
}

#define COM1 0x3f8
static void putc(char c) {
  while (!(inb(COM1 + 5) & 0x20)) {
  }
  outb(COM1, (uint8_t)c);
}
static void puts(const char* s) {
  while (*s) putc(*s++);
}
static void puthex(uint64_t v) {
  char buf[17];
  int n = 0;
  do {
    buf[n++] = "0123456789abcdef"[v & 0xf];
    v >>= 4;
  } while (v);
  puts("0x");
  while (n) putc(buf[--n]);
}
static void putdec(uint64_t v) {
  char buf[21];
  int n = 0;
  do {
    buf[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n) putc(buf[--n]);
}

static int fail(int status, const char* what) {
  puts("virtio-blk-guest: FAIL ");
  puts(what);
  puts("\n");
  return status;
}

/* The compiler may emit calls to these for struct copies and clears. */
void* memset(void* d, int c, size_t n) {
  uint8_t* p = d;
  while (n--) *p++ = (uint8_t)c;
  return d;
}
void* memcpy(void* d, const void* s, size_t n) {
  uint8_t* p = d;
  const uint8_t* q = s;
  while (n--) *p++ = *q++;
  return d;
}

/* ---- PCI configuration mechanism #1, bus 0 ------------------------------------------------
 * Dword accesses only: the one width every implementation of 0xcfc supports. */

static uint32_t pci_read(int dev, int fn, int off) {
  outl(0xcf8, 0x80000000u | (uint32_t)dev << 11 | (uint32_t)fn << 8 | (uint32_t)(off & 0xfc));
  return inl(0xcfc);
}
static void pci_write(int dev, int fn, int off, uint32_t v) {
  outl(0xcf8, 0x80000000u | (uint32_t)dev << 11 | (uint32_t)fn << 8 | (uint32_t)(off & 0xfc));
  outl(0xcfc, v);
}

#define PCI_COMMAND 0x04
#define PCI_CMD_MEMORY (1u << 1)
#define PCI_CMD_MASTER (1u << 2)
#define PCI_STATUS_CAP_LIST (1u << (16 + 4)) /* status bit 4, in the dword at 0x04 */

/* Where we place BARs that firmware left unassigned: the PCI hole, below the identity map's
   4 GiB end. */
static uint64_t next_bar_address = 0xe0000000u;

/* Returns the guest-physical address of memory BAR `bar` of 00:dev.0, assigning one when it
   is unassigned or above what our 4 GiB identity map reaches; 0 when that is impossible. */
static uint64_t bar_address_uncached(int dev, int bar) {
  int off = 0x10 + 4 * bar;
  uint32_t lo = pci_read(dev, 0, off);
  if (lo & 1) return 0; /* an I/O BAR */
  int is64 = ((lo >> 1) & 3) == 2;
  if (is64 && bar == 5) return 0;
  uint64_t addr = lo & ~0xfull;
  if (is64) addr |= (uint64_t)pci_read(dev, 0, off + 4) << 32;
  if (addr != 0 && addr < 0x100000000ull) return addr;

  /* Size it with decoding off (§ PCI 6.2.5.1), then place it naturally aligned. */
  uint32_t cmd = pci_read(dev, 0, PCI_COMMAND) & 0xffff;
  pci_write(dev, 0, PCI_COMMAND, cmd & ~PCI_CMD_MEMORY);
  pci_write(dev, 0, off, 0xffffffffu);
  uint64_t mask = pci_read(dev, 0, off) & ~0xfull;
  if (is64) {
    pci_write(dev, 0, off + 4, 0xffffffffu);
    mask |= (uint64_t)pci_read(dev, 0, off + 4) << 32;
  } else {
    mask |= 0xffffffff00000000ull;
  }
  uint64_t size = ~mask + 1;
  if (mask == 0 || (size & (size - 1)) != 0) return 0;
  addr = (next_bar_address + size - 1) & ~(size - 1);
  if (addr + size > 0xfec00000u) return 0; /* keep clear of the IOAPIC and LAPIC */
  next_bar_address = addr + size;
  pci_write(dev, 0, off, (uint32_t)addr | (lo & 0xf));
  if (is64) pci_write(dev, 0, off + 4, 0);
  pci_write(dev, 0, PCI_COMMAND, cmd);
  puts("virtio-blk-guest: assigned BAR");
  putdec((uint64_t)bar);
  puts(" at ");
  puthex(addr);
  puts("\n");
  return addr;
}

static uint64_t bar_address(int dev, int bar) {
  static uint64_t known[6];
  if (!known[bar]) known[bar] = bar_address_uncached(dev, bar);
  return known[bar];
}

/* ---- virtio-pci modern --------------------------------------------------------------------- */

#define VIRTIO_PCI_CAP_COMMON 1
#define VIRTIO_PCI_CAP_NOTIFY 2
#define VIRTIO_PCI_CAP_ISR 3
#define VIRTIO_PCI_CAP_DEVICE 4

/* struct virtio_pci_common_cfg (§4.1.4.3) */
#define COMMON_DFSELECT 0x00      /* le32 */
#define COMMON_DF 0x04            /* le32 */
#define COMMON_GFSELECT 0x08      /* le32 */
#define COMMON_GF 0x0c            /* le32 */
#define COMMON_STATUS 0x14        /* u8 */
#define COMMON_CFGGENERATION 0x15 /* u8 */
#define COMMON_Q_SELECT 0x16      /* le16 */
#define COMMON_Q_SIZE 0x18        /* le16 */
#define COMMON_Q_ENABLE 0x1c      /* le16 */
#define COMMON_Q_NOFF 0x1e        /* le16 */
#define COMMON_Q_DESC 0x20        /* le64 */
#define COMMON_Q_AVAIL 0x28       /* le64 */
#define COMMON_Q_USED 0x30        /* le64 */
#define COMMON_MIN_LENGTH 0x38

#define STATUS_ACKNOWLEDGE 1
#define STATUS_DRIVER 2
#define STATUS_DRIVER_OK 4
#define STATUS_FEATURES_OK 8
#define STATUS_NEEDS_RESET 64

#define VIRTIO_F_VERSION_1 32
#define VIRTIO_BLK_F_FLUSH 9

struct region {
  int found;
  uint64_t base; /* guest-physical */
  uint32_t length;
};
static struct region common, notify, isr, devcfg;
static uint32_t notify_off_multiplier;

struct virtq_desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
struct virtq_used_elem {
  uint32_t id;
  uint32_t len;
};

/* One split virtqueue of up to 256 entries: descriptors, then the available ring, then the
   used ring, each on its own page (the alignment rules ask for 16, 2 and 4 bytes). */
#define QUEUE_MAX 256
static uint8_t ring_memory[3 * 4096] __attribute__((aligned(4096)));
#define DESC ((volatile struct virtq_desc*)ring_memory)
#define AVAIL_FLAGS ((volatile uint16_t*)(ring_memory + 4096))
#define AVAIL_IDX ((volatile uint16_t*)(ring_memory + 4096 + 2))
#define AVAIL_RING ((volatile uint16_t*)(ring_memory + 4096 + 4))
#define USED_IDX ((volatile uint16_t*)(ring_memory + 8192 + 2))
#define USED_RING ((volatile struct virtq_used_elem*)(ring_memory + 8192 + 4))

static uint16_t queue_size, avail_idx, used_idx;
static uint64_t notify_address;

/* struct virtio_blk_req (§5.2.6) */
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
struct blk_header {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};
static volatile struct blk_header header;
static volatile uint8_t request_status;
static uint8_t buffer[4096] __attribute__((aligned(4096)));

/* How long a request or a reset may take: 5 s of PIT time. Polling calls pit_now often
   enough for it to see all of the time (every MMIO read or memory poll is far under 55 ms). */
#define TIMEOUT_TICKS (5ull * PIT_HZ)

/* Submits one request (header, optional data, status) as a three- or two-descriptor chain,
   notifies, and polls the used ring. Returns 0 on VIRTIO_BLK_S_OK, else prints why and
   returns -1. */
static int submit(uint32_t type, uint64_t sector, void* data, uint32_t len) {
  header.type = type;
  header.reserved = 0;
  header.sector = sector;
  request_status = 0xff;
  int n = 0;
  DESC[n].addr = (uint64_t)(uintptr_t)&header;
  DESC[n].len = sizeof header;
  DESC[n].flags = VIRTQ_DESC_F_NEXT;
  DESC[n].next = (uint16_t)(n + 1);
  n++;
  if (len) {
    DESC[n].addr = (uint64_t)(uintptr_t)data;
    DESC[n].len = len;
    DESC[n].flags = VIRTQ_DESC_F_NEXT | (type == VIRTIO_BLK_T_IN ? VIRTQ_DESC_F_WRITE : 0);
    DESC[n].next = (uint16_t)(n + 1);
    n++;
  }
  DESC[n].addr = (uint64_t)(uintptr_t)&request_status;
  DESC[n].len = 1;
  DESC[n].flags = VIRTQ_DESC_F_WRITE;
  DESC[n].next = 0;

  if (*USED_IDX != used_idx) {
    puts("virtio-blk-guest: a used element arrived for no request (one done twice?)\n");
    return -1;
  }
  AVAIL_RING[avail_idx % queue_size] = 0; /* the chain's head */
  barrier(); /* x86 keeps stores in order; the compiler must too */
  *AVAIL_IDX = ++avail_idx;
  barrier();
  mmio_write16(notify_address, 0); /* queue 0 */

  uint64_t start = pit_now();
  while (*USED_IDX == used_idx) {
    if (pit_now() - start > TIMEOUT_TICKS) {
      puts("virtio-blk-guest: no used element within 5 s; device_status ");
      puthex(mmio_read8(common.base + COMMON_STATUS));
      puts("\n");
      return -1;
    }
  }
  barrier();
  volatile struct virtq_used_elem* e = &USED_RING[used_idx % queue_size];
  used_idx++;
  if (e->id != 0) {
    puts("virtio-blk-guest: used element names descriptor ");
    putdec(e->id);
    puts(", not 0\n");
    return -1;
  }
  if (request_status != 0) {
    puts("virtio-blk-guest: request status ");
    putdec(request_status);
    puts(" (0 = VIRTIO_BLK_S_OK)\n");
    return -1;
  }
  return 0;
}

/* The disk contract's patterns (see the top of this file). */
static uint32_t pattern(uint32_t offset, uint32_t salt) { return offset * 0x9e3779b1u + salt; }
#define PATTERN_A 0x6d6f7373u /* "moss" */
#define PATTERN_B 0x77726974u /* "writ" */

/* Checks buffer against the pattern for disk offsets [first, first + 4096). */
static int check_pattern(uint32_t first, uint32_t salt) {
  const uint32_t* w = (const uint32_t*)buffer;
  for (uint32_t i = 0; i < 1024; i++) {
    uint32_t want = pattern(first + 4 * i, salt);
    if (w[i] != want) {
      puts("virtio-blk-guest: disk offset ");
      puthex(first + 4 * i);
      puts(" holds ");
      puthex(w[i]);
      puts(", expected ");
      puthex(want);
      puts("\n");
      return -1;
    }
  }
  return 0;
}

/* Checks that buffer holds zeros, which were disk offsets [first, first + 4096). */
static int check_zeros(uint32_t first) {
  const uint32_t* w = (const uint32_t*)buffer;
  for (uint32_t i = 0; i < 1024; i++) {
    if (w[i] != 0) {
      puts("virtio-blk-guest: disk offset ");
      puthex(first + 4 * i);
      puts(" holds ");
      puthex(w[i]);
      puts(", expected 0\n");
      return -1;
    }
  }
  return 0;
}

/* Which contract (the top of this file) this build of the guest checks. */
#ifdef VIRTIO_BLK_NULL_CONTRACT
static const int null_contract = 1;
#else
static const int null_contract = 0;
#endif

/* What sectors 0..7 hold, and what sectors 8..15 hold after the write. */
static int check_first_sectors(void) { return null_contract ? check_zeros(0) : check_pattern(0, PATTERN_A); }
static int check_written_sectors(void) { return null_contract ? check_zeros(4096) : check_pattern(4096, PATTERN_B); }

/* Finds 1af4:1042 (virtio-blk, modern only) on bus 0. Returns its device number, or -1. */
static int find_device(void) {
  for (int dev = 0; dev < 32; dev++) {
    if (pci_read(dev, 0, 0) == (0x1042u << 16 | 0x1af4u)) return dev;
  }
  return -1;
}

/* Walks the capability list for the first usable capability of each cfg_type 1..4 (§4.1.4:
   a driver uses the first it understands; BAR values above 5 are reserved and skipped). */
static int read_capabilities(int dev) {
  if (!(pci_read(dev, 0, PCI_COMMAND) & PCI_STATUS_CAP_LIST)) return fail(kNoCapability, "no capability list");
  uint32_t ptr = pci_read(dev, 0, 0x34) & 0xfc;
  for (int guard = 0; ptr >= 0x40 && guard < 48; guard++) {
    uint32_t h = pci_read(dev, 0, (int)ptr);
    uint32_t id = h & 0xff, next = (h >> 8) & 0xfc, len = (h >> 16) & 0xff, type = h >> 24;
    if (id == 0x09 && len >= 16 && type >= 1 && type <= 4) {
      uint32_t bar = pci_read(dev, 0, (int)ptr + 4) & 0xff;
      struct region* r = type == VIRTIO_PCI_CAP_COMMON ? &common
                         : type == VIRTIO_PCI_CAP_NOTIFY ? &notify
                         : type == VIRTIO_PCI_CAP_ISR    ? &isr
                                                         : &devcfg;
      if (bar <= 5 && !r->found && (type != VIRTIO_PCI_CAP_NOTIFY || len >= 20)) {
        uint64_t base = bar_address(dev, (int)bar);
        if (base == 0) return fail(kBadBar, "a virtio capability names an I/O BAR or one that cannot be placed");
        r->found = 1;
        r->base = base + pci_read(dev, 0, (int)ptr + 8);
        r->length = pci_read(dev, 0, (int)ptr + 12);
        if (type == VIRTIO_PCI_CAP_NOTIFY) notify_off_multiplier = pci_read(dev, 0, (int)ptr + 16);
      }
    }
    ptr = next;
  }
  if (!common.found || !notify.found || !isr.found || !devcfg.found)
    return fail(kNoCapability, "missing one of the common/notify/ISR/device virtio capabilities");
  if (common.length < COMMON_MIN_LENGTH || notify.length < 2 || isr.length < 1 || devcfg.length < 8)
    return fail(kNoCapability, "a virtio capability is too short");
  return 0;
}

int guest_main(void) {
  int dev = find_device();
  if (dev < 0) return fail(kNoDevice, "no virtio-blk device (1af4:1042) on PCI bus 0");
  int r = read_capabilities(dev);
  if (r) return r;
  uint32_t cmd = pci_read(dev, 0, PCI_COMMAND) & 0xffff;
  pci_write(dev, 0, PCI_COMMAND, cmd | PCI_CMD_MEMORY | PCI_CMD_MASTER);
  puts("virtio-blk-guest: found 1af4:1042 at 00:");
  putdec((uint64_t)dev);
  puts(".0, common config at ");
  puthex(common.base);
  puts("\n");

  /* §3.1.1: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queues, DRIVER_OK. */
  uint64_t c = common.base;
  mmio_write8(c + COMMON_STATUS, 0);
  uint64_t start = pit_now();
  while (mmio_read8(c + COMMON_STATUS) != 0) {
    if (pit_now() - start > TIMEOUT_TICKS) return fail(kResetStuck, "device_status does not read 0 after a reset");
  }
  mmio_write8(c + COMMON_STATUS, STATUS_ACKNOWLEDGE);
  mmio_write8(c + COMMON_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
  mmio_write32(c + COMMON_DFSELECT, 0);
  uint64_t offered = mmio_read32(c + COMMON_DF);
  mmio_write32(c + COMMON_DFSELECT, 1);
  offered |= (uint64_t)mmio_read32(c + COMMON_DF) << 32;
  if (!(offered & (1ull << VIRTIO_F_VERSION_1))) return fail(kNoVersion1, "VIRTIO_F_VERSION_1 is not offered");
  /* VERSION_1, and FLUSH when offered: a flush may only be sent when negotiated (§5.2.6.2). */
  uint64_t wanted = (1ull << VIRTIO_F_VERSION_1) | (offered & (1ull << VIRTIO_BLK_F_FLUSH));
  mmio_write32(c + COMMON_GFSELECT, 0);
  mmio_write32(c + COMMON_GF, (uint32_t)wanted);
  mmio_write32(c + COMMON_GFSELECT, 1);
  mmio_write32(c + COMMON_GF, (uint32_t)(wanted >> 32));
  mmio_write8(c + COMMON_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
  if (!(mmio_read8(c + COMMON_STATUS) & STATUS_FEATURES_OK))
    return fail(kFeaturesRejected, "the device did not accept FEATURES_OK");

  /* Capacity (le64 at device config offset 0), read consistently (§4.1.4.3.1). */
  uint64_t capacity;
  uint8_t generation;
  do {
    generation = mmio_read8(c + COMMON_CFGGENERATION);
    capacity = mmio_read32(devcfg.base) | (uint64_t)mmio_read32(devcfg.base + 4) << 32;
  } while (generation != mmio_read8(c + COMMON_CFGGENERATION));
  if (capacity < 16) return fail(kTooSmall, "the disk has fewer than 16 sectors");
  if (null_contract && !(offered & (1ull << VIRTIO_BLK_F_FLUSH))) return fail(kNoFlush, "FLUSH is not offered");

  mmio_write16(c + COMMON_Q_SELECT, 0);
  uint16_t max = mmio_read16(c + COMMON_Q_SIZE);
  if (max == 0 || mmio_read16(c + COMMON_Q_ENABLE) != 0)
    return fail(kNoQueue, "queue 0 is unavailable (size 0) or already enabled");
  queue_size = max < QUEUE_MAX ? max : QUEUE_MAX;
  mmio_write16(c + COMMON_Q_SIZE, queue_size);
  mmio_write64(c + COMMON_Q_DESC, (uint64_t)(uintptr_t)DESC);
  mmio_write64(c + COMMON_Q_AVAIL, (uint64_t)(uintptr_t)AVAIL_FLAGS);
  mmio_write64(c + COMMON_Q_USED, (uint64_t)(uintptr_t)(ring_memory + 8192));
  uint64_t notify_offset = (uint64_t)mmio_read16(c + COMMON_Q_NOFF) * notify_off_multiplier;
  if (notify_offset + 2 > notify.length) return fail(kNoCapability, "queue 0's doorbell lies outside the notify capability");
  notify_address = notify.base + notify_offset;
  mmio_write16(c + COMMON_Q_ENABLE, 1);
  mmio_write8(c + COMMON_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
  if (mmio_read8(c + COMMON_STATUS) & STATUS_NEEDS_RESET)
    return fail(kDeviceNeedsReset, "the device set DEVICE_NEEDS_RESET after DRIVER_OK");
  puts("virtio-blk-guest: capacity ");
  putdec(capacity);
  puts(" sectors, queue size ");
  putdec(queue_size);
  puts(offered & (1ull << VIRTIO_BLK_F_FLUSH) ? ", flush offered\n" : ", no flush\n");

  /* Read sectors 0..7: pattern A (zeros under the null contract). */
  uint32_t* w = (uint32_t*)buffer;
  for (uint32_t i = 0; i < 1024; i++) w[i] = 0xa5a5a5a5u; /* what the device reads must replace */
  if (submit(VIRTIO_BLK_T_IN, 0, buffer, sizeof buffer)) return fail(kReadFailed, "reading sectors 0-7");
  if (check_first_sectors()) return fail(kReadMismatch, "sectors 0-7 do not hold what the contract says");
  puts("virtio-blk-guest: read sectors 0-7 ok\n");

  /* Write pattern B to sectors 8..15, flush, read it back (zeros under the null contract). */
  for (uint32_t i = 0; i < 1024; i++) w[i] = pattern(4096 + 4 * i, PATTERN_B);
  if (submit(VIRTIO_BLK_T_OUT, 8, buffer, sizeof buffer)) return fail(kWriteFailed, "writing sectors 8-15");
  puts("virtio-blk-guest: wrote sectors 8-15\n");
  if (offered & (1ull << VIRTIO_BLK_F_FLUSH)) {
    if (submit(VIRTIO_BLK_T_FLUSH, 0, NULL, 0)) return fail(kFlushFailed, "flushing");
    puts("virtio-blk-guest: flush ok\n");
  }
  for (uint32_t i = 0; i < 1024; i++) w[i] = 0xa5a5a5a5u;
  if (submit(VIRTIO_BLK_T_IN, 8, buffer, sizeof buffer)) return fail(kReadBackFailed, "reading back sectors 8-15");
  if (check_written_sectors()) return fail(kReadBackMismatch, "sectors 8-15 do not hold what the contract says");
  puts("virtio-blk-guest: read back sectors 8-15 ok\n");
#ifdef VIRTIO_BLK_LOOP
  if (capacity < 16 + 8 * LOOP_ROUNDS) return fail(kTooSmall, "the disk is too small for the loop");
  for (uint32_t round = 0; round < LOOP_ROUNDS; round++) {
    uint32_t first = (16 + 8 * round) * 512;
    for (uint32_t i = 0; i < 1024; i++) w[i] = pattern(first + 4 * i, PATTERN_C);
    if (submit(VIRTIO_BLK_T_OUT, 16 + 8 * round, buffer, sizeof buffer)) return fail(kLoopFailed, "writing a round");
    for (uint32_t i = 0; i < 1024; i++) w[i] = 0xa5a5a5a5u;
    if (submit(VIRTIO_BLK_T_IN, 16 + 8 * round, buffer, sizeof buffer)) return fail(kLoopFailed, "reading a round back");
    if (check_pattern(first, PATTERN_C)) return fail(kLoopFailed, "a round's sectors do not hold pattern C");
    puts("virtio-blk-guest: round ");
    putdec(round);
    puts("\n");
    uint64_t t0 = pit_now();
    while (pit_now() - t0 < PIT_HZ / 50) {
    }
  }
  for (uint32_t round = 0; round < LOOP_ROUNDS; round++) {
    for (uint32_t i = 0; i < 1024; i++) w[i] = 0xa5a5a5a5u;
    if (submit(VIRTIO_BLK_T_IN, 16 + 8 * round, buffer, sizeof buffer)) return fail(kLoopFailed, "reading the rounds again");
    if (check_pattern((16 + 8 * round) * 512, PATTERN_C)) return fail(kLoopFailed, "a round's sectors changed");
  }
  if (*USED_IDX != used_idx) return fail(kLoopFailed, "a used element arrived for no request (one done twice?)");
  puts("virtio-blk-guest: rounds ok\n");
#endif
  puts("virtio-blk-guest: ok\n");
  return kOk;
}
