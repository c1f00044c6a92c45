/* Counts forever, one line per tick, with all of its state in registers: it never writes
   memory (no calls, no stack), so restoring only the vCPU's state takes it back exactly to
   where that state was saved, wherever the save happened. For tests of pause, resume and
   vCPU state save/restore. */
#include "guest.h"
BZIMAGE_HEADER
KERNEL_ENTRY

/* Writes bl to COM1 once the transmitter is empty; clobbers al and dx. */
.macro OUT_BL
.Lwait\@:
  mov dx, COM1 + 5
  in al, dx
  test al, 0x20
  jz .Lwait\@
  mov al, bl
  mov dx, COM1
  out dx, al
.endm

guest_main:
  xor r12, r12
tick:
  inc r12
  lea rsi, [rip + tick_text]
1: mov bl, [rsi]
  test bl, bl
  jz 2f
  OUT_BL
  inc rsi
  jmp 1b
2: mov r13, r12                  /* 16 hex digits of the count */
  mov ecx, 16
3: rol r13, 4
  mov bl, r13b
  and bl, 0xf
  add bl, '0'
  cmp bl, '9'
  jbe 4f
  add bl, 'a' - '0' - 10
4: OUT_BL
  dec ecx
  jnz 3b
  mov bl, 10
  OUT_BL
  mov ecx, 3000000
5: dec ecx
  jnz 5b
  jmp tick
tick_text:
  .asciz "moss-test-guest: tick "
