/* Sites the emulator declines (so `auto` boosts them), for the boost tests. Intel syntax. */
    .intel_syntax noprefix
    .text

/* void boost_copy(void *dst, const void *src, size_t n): a long rep movsb, so that signals
 * land while a thread is inside the slot, in the middle of the string op. */
    .globl boost_copy, boost_movs_site
    .type boost_copy, @function
boost_copy:
    mov rcx, rdx
boost_movs_site:
    rep movsb
    ret
    .size boost_copy, . - boost_copy

/* long boost_sse(long *out): a RIP-relative SSE load (re-encoded for the slot). */
    .globl boost_sse, boost_sse_site
    .type boost_sse, @function
boost_sse:
boost_sse_site:
    movdqu xmm0, [rip + boost_vec]
    movdqu [rdi], xmm0
    mov rax, [rdi]
    add rax, [rdi + 8]
    ret
    .size boost_sse, . - boost_sse

/* long boost_xadd(long v): lock xadd on a RIP-relative counter; returns the old value. */
    .globl boost_xadd, boost_xadd_site
    .type boost_xadd, @function
boost_xadd:
    mov rax, rdi
boost_xadd_site:
    lock xadd [rip + boost_counter], rax
    ret
    .size boost_xadd, . - boost_xadd

    .data
    .balign 16
    .globl boost_vec, boost_counter
boost_vec:
    .quad 0x1111, 0x2222
boost_counter:
    .quad 0
    .section .note.GNU-stack,"",@progbits
