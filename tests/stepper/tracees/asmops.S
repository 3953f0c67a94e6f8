/* Hand-written probe sites whose shape a compiler will not promise: ret imm16, syscall,
 * SSE/AVX RIP-relative loads and stores, lock xadd, rep string ops, faulting accesses,
 * and instructions no strategy can step (int3, hlt). Each site has a global label. */
    .intel_syntax noprefix

    .data
    .balign 32
    .globl vec_src, vec_dst, shared_counter
vec_src: .quad 1, 2, 3, 4
vec_dst: .quad 0, 0, 0, 0
shared_counter: .quad 0

    .bss
    .balign 4096
    .globl guarded_page
guarded_page: .skip 4096

    .text

/* long call_ret_imm(long v): pushes v, the callee pops it with `ret 8`, returns 2*v. */
    .globl call_ret_imm, ret_imm_site
call_ret_imm:
    push rdi
    call ret_imm_callee
    ret
ret_imm_callee:
    mov rax, [rsp + 8]
    add rax, rax
ret_imm_site:
    ret 8

/* long do_write(const char *buf, long len): write(1, buf, len) by `syscall`; returns the
 * count, or -1000 if RCX/R11 after the syscall are not what the CPU gives in place. */
    .globl do_write, syscall_site
do_write:
    mov rdx, rsi
    mov rsi, rdi
    mov edi, 1
    mov eax, 1
syscall_site:
    syscall
syscall_next:
    lea rdx, [rip + syscall_next]
    cmp rcx, rdx
    jne 1f
    test r11, 0x100
    jnz 1f
    ret
1:  mov rax, -1000
    ret

/* void vec_ops(int avx): vec_dst = 2*vec_src through xmm (and 4*vec_src through ymm). */
    .globl vec_ops, sse_load_site, sse_store_site, avx_load_site, avx_store_site
vec_ops:
sse_load_site:
    movdqu xmm0, [rip + vec_src]
    paddq xmm0, xmm0
sse_store_site:
    movdqu [rip + vec_dst], xmm0
    movdqa xmm1, [rip + vec_src + 16]
    paddq xmm1, xmm1
    movdqa [rip + vec_dst + 16], xmm1
    test edi, edi
    jz 1f
avx_load_site:
    vmovdqu ymm2, [rip + vec_src]
    vpaddq ymm2, ymm2, ymm2
    vpaddq ymm2, ymm2, ymm2
avx_store_site:
    vmovdqu [rip + vec_dst], ymm2
    vzeroupper
1:  ret

/* long lock_add(void) / native_lock_add(void): shared_counter += 2 atomically, by a
 * `lock xadd` (not emulated: XOL) and a `lock add` (emulated, but never while other threads
 * run). native_lock_add is the same code, left unprobed. */
    .globl lock_add, lock_site, lock_add_site, native_lock_add
lock_add:
    mov eax, 1
lock_site:
    lock xadd [rip + shared_counter], rax
lock_add_site:
    lock add qword ptr [rip + shared_counter], 1
    ret
native_lock_add:
    mov eax, 1
    lock xadd [rip + shared_counter], rax
    lock add qword ptr [rip + shared_counter], 1
    ret

/* void rep_ops(char *dst, const char *src, long n): copy n bytes, then fill 4 with 'x'. */
    .globl rep_ops, rep_movs_site, rep_stos_site
rep_ops:
    mov rcx, rdx
rep_movs_site:
    rep movsb
    mov al, 'x'
    mov ecx, 4
rep_stos_site:
    rep stosb
    ret

/* void fault_store(int *p): stores to p (the test points it at a PROT_NONE page). */
    .globl fault_store, fault_store_site, fault_load_rip, fault_load_rip_site
fault_store:
fault_store_site:
    mov dword ptr [rdi], 42
    ret
/* int fault_load_rip(void): loads from guarded_page (PROT_NONE while the test runs). */
fault_load_rip:
fault_load_rip_site:
    mov eax, [rip + guarded_page + 8]
    ret

/* unsigned div_by(unsigned a, unsigned b): a / b; b == 0 raises SIGFPE at div_site. */
    .globl div_by, div_site
div_by:
    mov eax, edi
    xor edx, edx
div_site:
    div esi
    ret

/* Never executed: instructions neither emulated nor steppable out of line. */
    .globl unsteppable, int3_site, hlt_site
unsteppable:
    ret
int3_site:
    int3
hlt_site:
    hlt
    ret
    .section .note.GNU-stack, "", @progbits
