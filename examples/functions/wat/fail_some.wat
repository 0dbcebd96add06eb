;; A partial-batch failure: events whose value starts with "fail" are failed one by one (the
;; reply's failure list, message "rejected"); the others pass through as in identity.wat.
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "rejected")

  (func (export "freshet_alloc") (param $size i32) (result i32)
    (local $need i32) (local $have i32)
    (local.set $need (i32.add (i32.const 1088) (i32.shl (local.get $size) (i32.const 1))))
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $need) (local.get $have))
      (then
        (if (i32.eq (i32.const -1)
                    (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $need) (local.get $have))
                                                     (i32.const 65535))
                                            (i32.const 16))))
          (then unreachable))))
    (i32.const 1024))

  ;; Skips an optional field (i32 length, -1 = null, then the bytes).
  (func $skip_opt (param $p i32) (result i32)
    (local $n i32)
    (local.set $n (i32.load (local.get $p)))
    (if (result i32) (i32.lt_s (local.get $n) (i32.const 0))
      (then (i32.add (local.get $p) (i32.const 4)))
      (else (i32.add (i32.add (local.get $p) (i32.const 4)) (local.get $n)))))

  ;; Skips the headers (u32 count; each: u32 name length, name, optional value).
  (func $skip_headers (param $p i32) (result i32)
    (local $n i32)
    (local.set $n (i32.load (local.get $p)))
    (local.set $p (i32.add (local.get $p) (i32.const 4)))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $p (i32.add (i32.add (local.get $p) (i32.const 4)) (i32.load (local.get $p))))
        (local.set $p (call $skip_opt (local.get $p)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $p))

  ;; Whether the optional field at $p starts with "fail".
  (func $starts_fail (param $p i32) (result i32)
    (if (result i32) (i32.ge_s (i32.load (local.get $p)) (i32.const 4))
      (then (i32.eq (i32.load offset=4 (local.get $p)) (i32.const 0x6c696166)))
      (else (i32.const 0))))

  (func (export "freshet_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $first i32) (local $p i32) (local $n i32) (local $i i32) (local $reply i32) (local $out i32)
    (local $start i32) (local $v i32) (local $size i32) (local $count i32) (local $fcount i32) (local $fptr i32)
    (local.set $first (i32.add (i32.add (local.get $ptr) (i32.const 4)) (i32.load (local.get $ptr))))
    (local.set $n (i32.load (local.get $first)))
    (local.set $first (i32.add (local.get $first) (i32.const 4)))
    (local.set $reply (i32.add (local.get $ptr) (local.get $len)))
    (i32.store (local.get $reply) (i32.const 0))
    (local.set $out (i32.add (local.get $reply) (i32.const 8)))
    ;; Outputs: the events that do not start with "fail".
    (local.set $p (local.get $first))
    (local.set $i (i32.const 0))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $start (i32.add (local.get $p) (i32.const 20)))
        (local.set $v (call $skip_opt (local.get $start)))
        (local.set $p (call $skip_headers (call $skip_opt (local.get $v))))
        (if (i32.eqz (call $starts_fail (local.get $v)))
          (then
            (local.set $size (i32.sub (local.get $p) (local.get $start)))
            (i32.store (local.get $out) (i32.const -1))
            (memory.copy (i32.add (local.get $out) (i32.const 4)) (local.get $start) (local.get $size))
            (local.set $out (i32.add (local.get $out) (i32.add (i32.const 4) (local.get $size))))
            (local.set $count (i32.add (local.get $count) (i32.const 1)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.store offset=4 (local.get $reply) (local.get $count))
    ;; Failures: the others, by index.
    (local.set $fptr (local.get $out))
    (local.set $out (i32.add (local.get $out) (i32.const 4)))
    (local.set $p (local.get $first))
    (local.set $i (i32.const 0))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $v (call $skip_opt (i32.add (local.get $p) (i32.const 20))))
        (local.set $p (call $skip_headers (call $skip_opt (local.get $v))))
        (if (call $starts_fail (local.get $v))
          (then
            (i32.store (local.get $out) (local.get $i))
            (i32.store offset=4 (local.get $out) (i32.const 8))
            (memory.copy (i32.add (local.get $out) (i32.const 8)) (i32.const 16) (i32.const 8))
            (local.set $out (i32.add (local.get $out) (i32.const 16)))
            (local.set $fcount (i32.add (local.get $fcount) (i32.const 1)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.store (local.get $fptr) (local.get $fcount))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $reply)) (i64.const 32))
            (i64.extend_i32_u (i32.sub (local.get $out) (local.get $reply))))))
