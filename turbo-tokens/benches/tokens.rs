//! Counting throughput (MB/s) per encoding, beside tiktoken-rs's encoder as a baseline, and
//! the per-call cost of `estimate` on a short chat and on requests that share a long system
//! prompt (counted once per thread, then remembered).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use turbo_tokens::{
    DefaultOutput, Encoding, MessageRef, RequestShape, TiktokenCounter, TokenCounter,
};

const PROSE_SENTENCES: [&str; 6] = [
    "The committee reviewed the quarterly figures and, after a long discussion, agreed to postpone the decision until March. ",
    "Rate limits are measured in tokens per minute; a request that exceeds them is rejected with status 429. ",
    "She didn't expect the results to arrive so quickly, but the pipeline had been tuned for weeks. ",
    "In 2023, roughly 41.7% of respondents said they'd used an AI assistant at work at least once a week.\n\n",
    "Summarise the following document in three bullet points, keeping every number exact. ",
    "\"Why,\" he asked, \"would anyone schedule ten million requests by hand?\" ",
];

const MIXED_SNIPPETS: [&str; 8] = [
    "こんにちは世界、今日は良い天気ですね。",
    "Привет, мир! Как дела у тебя сегодня? ",
    "مرحبا بالعالم، كيف حالك اليوم؟ ",
    "数学 ∑∫∂ √2 ≈ 1.41421356 ",
    "emoji 🚀🔥👩‍👩‍👧‍👦 done ",
    "fn main() {\n    println!(\"{}\", 1 + 2);\n}\n",
    "Mixed 中文 English にほんご 한국어 text. ",
    "Ελληνικά και Español con acentos: ñandú, café, über. ",
];

fn repeat_to(pieces: &[&str], bytes: usize) -> String {
    let mut text = String::with_capacity(bytes + 256);
    for piece in pieces.iter().cycle() {
        if text.len() >= bytes {
            break;
        }
        text.push_str(piece);
    }
    text
}

fn counting(c: &mut Criterion) {
    let counter = TiktokenCounter::try_new().unwrap();
    let inputs = [
        ("english", repeat_to(&PROSE_SENTENCES, 64 * 1024)),
        ("mixed_unicode", repeat_to(&MIXED_SNIPPETS, 64 * 1024)),
    ];
    let mut group = c.benchmark_group("count_text");
    group.measurement_time(Duration::from_secs(3));
    for (label, text) in &inputs {
        group.throughput(Throughput::Bytes(text.len() as u64));
        for encoding in Encoding::ALL {
            group.bench_function(format!("{encoding}/{label}"), |b| {
                b.iter(|| counter.count_text(encoding, black_box(text)));
            });
            // The baseline this crate replaces for counting: tiktoken-rs's own encoder.
            let reference = match encoding {
                Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
                Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
            };
            group.bench_function(format!("tiktoken-rs/{encoding}/{label}"), |b| {
                b.iter(|| reference.encode_ordinary(black_box(text)).len());
            });
        }
    }
    group.finish();
}

fn estimate_short_chat(c: &mut Criterion) {
    let counter = TiktokenCounter::try_new().unwrap();
    let messages = [
        MessageRef::new("system", "You are a concise assistant."),
        MessageRef::new(
            "user",
            "Summarise: the meeting moved to Thursday at 10am, room 4B.",
        ),
    ];
    let mut group = c.benchmark_group("estimate");
    group.throughput(Throughput::Elements(1));
    for model in ["gpt-4o-mini", "llama-3.3-70b-versatile"] {
        let request = RequestShape {
            max_tokens: Some(200),
            ..RequestShape::new(model, &messages)
        };
        group.bench_function(format!("short_chat/{model}"), |b| {
            b.iter(|| counter.estimate(black_box(&request), DefaultOutput::GROQ));
        });
    }
    group.finish();
}

fn estimate_shared_system_prompt(c: &mut Criterion) {
    let counter = TiktokenCounter::try_new().unwrap();
    let system = repeat_to(&PROSE_SENTENCES, 8 * 1024);
    let users: Vec<String> = (0..1024)
        .map(|i| format!("Summarise item {i} in one line."))
        .collect();
    let mut group = c.benchmark_group("estimate");
    group.throughput(Throughput::Elements(1));
    let mut next = 0;
    group.bench_function("shared_8k_system_prompt/gpt-4o-mini", |b| {
        b.iter(|| {
            next = (next + 1) % users.len();
            let messages = [
                MessageRef::new("system", &system),
                MessageRef::new("user", &users[next]),
            ];
            let request = RequestShape {
                max_tokens: Some(200),
                ..RequestShape::new("gpt-4o-mini", &messages)
            };
            counter.estimate(black_box(&request), DefaultOutput::GROQ)
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    counting,
    estimate_short_chat,
    estimate_shared_system_prompt
);
criterion_main!(benches);
