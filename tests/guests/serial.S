/* Serial output: a line on COM1, then status 0. */
#include "guest.h"
BZIMAGE_HEADER
KERNEL_ENTRY
guest_main:
  PUTS "moss-test-guest: serial ok\n"
  xor eax, eax
  ret
