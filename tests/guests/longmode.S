/* Entry state per the 64-bit boot protocol: flat __BOOT_CS/__BOOT_DS segments, protected
   mode with paging, PAE, EFER.LME/LMA, interrupts off, RSI -> boot_params with the setup
   header copied in and type_of_loader set. Each failed check returns its own status. */
#include "guest.h"
BZIMAGE_HEADER
KERNEL_ENTRY
guest_main:
  mov ax, cs
  cmp ax, 0x10
  FAIL_IF ne, 10
  mov ax, ds
  cmp ax, 0x18
  FAIL_IF ne, 11
  mov ax, ss
  cmp ax, 0x18
  FAIL_IF ne, 11
  mov rax, cr0
  and eax, 0x80000001                 /* PG | PE */
  cmp eax, 0x80000001
  FAIL_IF ne, 12
  mov rax, cr4
  test eax, 0x20                      /* PAE */
  FAIL_IF z, 13
  mov ecx, 0xc0000080                 /* EFER */
  rdmsr
  and eax, 0x500                      /* LMA | LME */
  cmp eax, 0x500
  FAIL_IF ne, 14
  pushfq
  pop rax
  test eax, 0x200                     /* IF */
  FAIL_IF nz, 15
  cmp dword ptr [r15 + 0x202], 0x53726448  /* "HdrS" */
  FAIL_IF ne, 16
  cmp byte ptr [r15 + 0x210], 0xff    /* type_of_loader */
  FAIL_IF ne, 17
  PUTS "moss-test-guest: cmdline="
  mov edi, [r15 + 0x228]              /* cmd_line_ptr */
  call puts
  PUTS "\nmoss-test-guest: long mode ok\n"
  xor eax, eax
  ret
