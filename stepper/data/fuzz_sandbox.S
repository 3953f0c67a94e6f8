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
   case's POPF may set NT or ID, which PTRACE_SETREGS can neither set nor clear.

   Before the first case, the sandbox installs a seccomp filter (`filter` below) that allows
   mmap, mprotect and munmap, and only from the sandbox's own code: any other system call, or
   one made from a case's code (`syscall`, `int 0x80`, `sysenter`: the arch field is checked,
   so the i386 entry points do not escape it, and the x32 bit is refused) kills the sandbox
   with SIGSYS before the call acts. The filter's address bounds are filled in at run time
   from this code's own addresses. */
        .text
        .globl _start
_start:
        lea     _start(%rip), %rax      /* the filter allows [_start, code_end] only */
        mov     %eax, lo_k(%rip)
        shr     $32, %rax
        mov     %eax, hi_k(%rip)
        lea     code_end(%rip), %rax
        mov     %eax, end_k(%rip)
        shr     $32, %rax
        cmp     %eax, hi_k(%rip)        /* the code must not straddle a 4 GiB boundary */
        jne     fail
        mov     $157, %eax              /* prctl(PR_SET_NO_NEW_PRIVS, 1): needed unprivileged */
        mov     $38, %edi
        mov     $1, %esi
        xor     %edx, %edx
        xor     %r10d, %r10d
        xor     %r8d, %r8d
        syscall
        test    %rax, %rax
        jnz     fail
        mov     $317, %eax              /* seccomp(SECCOMP_SET_MODE_FILTER, 0, &fprog) */
        mov     $1, %edi
        xor     %esi, %esi
        lea     fprog(%rip), %rdx
        syscall
        test    %rax, %rax
        jnz     fail
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
code_end:

        .data
        .balign 8
fprog:                                  /* struct sock_fprog */
        .short  (filter_end - filter) / 8
        .skip   6
        .quad   filter
/* struct sock_filter { u16 code; u8 jt, jf; u32 k }; offsets in struct seccomp_data: nr 0,
   arch 4, instruction_pointer 8 (low word) and 12 (high word). Jumps skip jt/jf entries. */
#define LD(off)         .short 0x20; .byte 0, 0; .long off      /* BPF_LD|BPF_W|BPF_ABS */
#define JEQ(k, t, f)    .short 0x15; .byte t, f; .long k        /* BPF_JMP|BPF_JEQ|BPF_K */
#define JGE(k, t, f)    .short 0x35; .byte t, f; .long k        /* BPF_JMP|BPF_JGE|BPF_K */
#define RET(k)          .short 0x06; .byte 0, 0; .long k        /* BPF_RET|BPF_K */
filter:
        LD(4)                           /*  0: arch */
        JEQ(0xc000003e, 0, 12)          /*  1: AUDIT_ARCH_X86_64, else kill (int 0x80...) */
        LD(0)                           /*  2: nr */
        JGE(0x40000000, 10, 0)          /*  3: the x32 ABI bit: kill */
        LD(12)                          /*  4: instruction pointer, high word */
        .short 0x15; .byte 0, 8         /*  5: == hi_k, else kill */
hi_k:   .long 0
        LD(8)                           /*  6: instruction pointer, low word */
        .short 0x35; .byte 0, 6         /*  7: >= lo_k, else kill */
lo_k:   .long 0
        .short 0x25; .byte 5, 0         /*  8: > end_k: kill */
end_k:  .long 0
        LD(0)                           /*  9: nr */
        JEQ(9, 2, 0)                    /* 10: mmap: allow */
        JEQ(10, 1, 0)                   /* 11: mprotect: allow */
        JEQ(11, 0, 1)                   /* 12: munmap: allow, else kill */
        RET(0x7fff0000)                 /* 13: SECCOMP_RET_ALLOW */
        RET(0x80000000)                 /* 14: SECCOMP_RET_KILL_PROCESS */
filter_end:

        .bss
        .balign 4096
cmd:
        .skip   4096 + 0x100000
