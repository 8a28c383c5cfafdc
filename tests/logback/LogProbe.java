// Logs hostile messages through the daemon's own logback (the jars amazon-kclpy installs)
// with the configuration named by -Dlogback.configurationFile; tests/test_logs.py parses
// what it writes. Run as a single-file program: java -cp <jars>/* LogProbe.java
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

public class LogProbe {
    public static void main(String[] args) {
        Logger log = LoggerFactory.getLogger("software.amazon.kinesis.Probe");
        log.info("plain message");
        log.info("quote \" backslash \\ tab \t newline \n cr \r ctrl \u0001 brace {} percent % end");
        log.warn("with exception", new RuntimeException("boom \"x\"\nsecond line"));
    }
}
