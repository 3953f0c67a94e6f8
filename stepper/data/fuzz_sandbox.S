/* The native oracle's sandbox (stepper/fuzz/native.py): a tracee with no libc, no heap and no
   stack use, linked far from where fuzz cases live, that maps and fills a case's pages on
   request so the oracle can single-step one instruction on the real CPU.

   Protocol: the oracle writes a command block at `cmd` (a count, then ops of four quadwords:
   kind, address, length, argument) and the pages' contents at `cmd + 4096`, sets rip to
   `serve` and continues. The sandbox runs the ops and stops with INT3 (SIGTRAP). A failed
   syscall stops it with UD2 (SIGILL) instead, rax holding the error and r13 the failing op,
   so a case whose pages collide with the sandbox's own is detected, never mapped over it.
   kinds: 1 munmap(address, length); 2 mmap(address, length) read-write, anonymous, fixed
   but never replacing; 3 copy `length` bytes from staging + argument to address;
   4 mprotect(address, length, argument). Every request first resets rflags with POPF: a
   case's POPF may set NT or ID, which PTRACE_SETREGS can neither set nor clear. */
        .text
        .globl _start
_start:
        lea     cmd(%rip), %rbx         /* tell the oracle where the command block is */
        int3
serve:
        push    $0x202                  /* clear NT and ID, which ptrace cannot clear, */
        popfq                           /* should the last case have set them (POPF) */
        lea     cmd(%rip), %rbx
        mov     (%rbx), %r12
        lea     8(%rbx), %r13
        lea     4096(%rbx), %r15
next_op:
        test    %r12, %r12
        jz      done
        mov     (%r13), %rax
        mov     8(%r13), %rdi
        mov     16(%r13), %rsi
        mov     24(%r13), %rdx
        cmp     $1, %rax
        je      op_munmap
        cmp     $2, %rax
        je      op_mmap
        cmp     $3, %rax
        je      op_copy
        cmp     $4, %rax
        je      op_mprotect
        jmp     fail
op_munmap:
        mov     $11, %eax
        syscall
        test    %rax, %rax
        jnz     fail
        jmp     advance
op_mmap:
        mov     %rdi, %r14
        mov     $3, %edx                /* PROT_READ | PROT_WRITE */
        mov     $0x100022, %r10d        /* MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE */
        mov     $-1, %r8
        xor     %r9d, %r9d
        mov     $9, %eax
        syscall
        cmp     %r14, %rax
        jne     fail
        jmp     advance
op_copy:
        mov     %rsi, %rcx
        lea     (%r15,%rdx), %rsi
        cld
        rep movsb
        jmp     advance
op_mprotect:
        mov     $10, %eax
        syscall
        test    %rax, %rax
        jnz     fail
advance:
        add     $32, %r13
        dec     %r12
        jmp     next_op
done:
        int3
        jmp     serve
fail:
        ud2

        .bss
        .balign 4096
cmd:
        .skip   4096 + 0x100000
