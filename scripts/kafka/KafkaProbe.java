// Readiness probe for the local Kafka of scripts/stack: a real produce and
// consume round trip through the Java client.
//
//   java -cp '<state dir>/kafka/libs/*' scripts/kafka/KafkaProbe.java BROKERS [TIMEOUT_SECONDS]
//
// Creates topic _stack_probe (1 partition, RF 1) if missing, produces a unique
// value to partition 0, reads it back by assigning the partition and seeking to
// the produced offset. Retries until TIMEOUT_SECONDS (default 60) have passed.
// Exit 0 on success, 1 when the deadline passed, 2 on bad usage.

import java.time.Duration;
import java.util.List;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class KafkaProbe {
    static final String TOPIC = "_stack_probe";
    static final long STEP_MS = 10_000;

    public static void main(String[] args) throws Exception {
        if (args.length < 1 || args.length > 2) {
            System.err.println("usage: KafkaProbe BROKERS [TIMEOUT_SECONDS]");
            System.exit(2);
        }
        String brokers = args[0];
        long timeoutSec = args.length > 1 ? Long.parseLong(args[1]) : 60;
        long start = System.nanoTime();
        long deadline = start + TimeUnit.SECONDS.toNanos(timeoutSec);
        String value = "probe-" + UUID.randomUUID();

        Exception last = null;
        for (int attempt = 1; ; attempt++) {
            long left = remainingMs(deadline);
            if (left <= 0) {
                break;
            }
            try {
                long offset = roundTrip(brokers, value, deadline);
                long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
                System.out.println("kafka probe ok: " + brokers + " " + TOPIC + "-0@" + offset
                        + " after " + attempt + " attempt(s), " + ms + " ms");
                System.exit(0);
            } catch (Exception e) {
                last = e;
                System.err.println("kafka probe attempt " + attempt + " failed: " + describe(e));
                long sleep = Math.min(500, remainingMs(deadline));
                if (sleep > 0) {
                    Thread.sleep(sleep);
                }
            }
        }
        System.err.println("kafka probe FAILED: no produce/consume round trip with " + brokers
                + " within " + timeoutSec + " s; last error: " + (last == null ? "none" : describe(last)));
        System.exit(1);
    }

    static long remainingMs(long deadlineNanos) {
        return TimeUnit.NANOSECONDS.toMillis(deadlineNanos - System.nanoTime());
    }

    static long step(long deadlineNanos) throws java.util.concurrent.TimeoutException {
        long left = remainingMs(deadlineNanos);
        if (left <= 0) {
            throw new java.util.concurrent.TimeoutException("deadline passed");
        }
        return Math.min(STEP_MS, left);
    }

    static String describe(Throwable e) {
        Throwable t = e;
        if (t instanceof ExecutionException && t.getCause() != null) {
            t = t.getCause();
        }
        return t.getClass().getSimpleName() + ": " + t.getMessage();
    }

    static long roundTrip(String brokers, String value, long deadline) throws Exception {
        int ms = (int) step(deadline);

        Properties common = new Properties();
        common.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
        common.put(AdminClientConfig.CLIENT_ID_CONFIG, "userpipe-stack-probe");
        common.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, String.valueOf(Math.min(ms, 5000)));
        common.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, String.valueOf(ms));
        common.put(AdminClientConfig.RECONNECT_BACKOFF_MS_CONFIG, "100");
        common.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");

        try (Admin admin = Admin.create(common)) {
            try {
                admin.createTopics(List.of(new NewTopic(TOPIC, 1, (short) 1)))
                        .all().get(step(deadline), TimeUnit.MILLISECONDS);
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof TopicExistsException)) {
                    throw e;
                }
            }
        }

        TopicPartition tp = new TopicPartition(TOPIC, 0);

        Properties pp = new Properties();
        pp.putAll(common);
        pp.remove(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG);
        pp.put(ProducerConfig.ACKS_CONFIG, "all");
        pp.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, String.valueOf(ms));
        pp.put(ProducerConfig.LINGER_MS_CONFIG, "0");
        pp.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, String.valueOf(Math.max(ms, 5000)));
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());

        long offset;
        KafkaProducer<String, String> producer = new KafkaProducer<>(pp);
        try {
            RecordMetadata md = producer.send(new ProducerRecord<>(TOPIC, 0, "probe", value))
                    .get(step(deadline), TimeUnit.MILLISECONDS);
            offset = md.offset();
        } finally {
            producer.close(Duration.ZERO);
        }

        Properties cp = new Properties();
        cp.putAll(common);
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());

        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(cp)) {
            consumer.assign(List.of(tp));
            consumer.seek(tp, offset);
            long until = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(step(deadline));
            while (System.nanoTime() < until) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    if (r.offset() == offset) {
                        if (!value.equals(r.value())) {
                            throw new IllegalStateException("read back '" + r.value() + "' at offset "
                                    + offset + ", expected '" + value + "'");
                        }
                        return offset;
                    }
                }
            }
        }
        throw new java.util.concurrent.TimeoutException("produced offset " + offset + " but did not read it back");
    }
}
