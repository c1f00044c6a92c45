/* i8042 reset: pulse the reset line (command 0xfe to port 0x64), the way Linux reboots with
   reboot=k. A VMM that ignores it lets the guest go on and report status 1. */
#include "guest.h"
BZIMAGE_HEADER
KERNEL_ENTRY
guest_main:
  PUTS "moss-test-guest: resetting\n"
  mov al, 0xfe
  out 0x64, al
  PUTS "moss-test-guest: the reset did not happen\n"
  mov eax, 1
  ret
